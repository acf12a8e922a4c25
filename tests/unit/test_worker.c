/*  test_worker.c - pigato_worker and pigato_reply against a real ROUTER
    playing the broker (plain and CURVE): READY and heartbeats, the exact
    reply frames, request heartbeats and reply_active (), reconnects with
    a fresh routing id, DISCONNECT on stop, replies outliving their worker,
    a drain (no room, late requests rejected, DISCONNECT once done).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include "../../mesh/base/internal.h"
#include "../../mesh/wire/native.h"
#include "fake_broker.h"

//  What the request handler does with each request.
typedef enum {
    HANDLE_KEEP,    //  hold the reply for the test
    HANDLE_ECHO,    //  end with the request data
    HANDLE_STREAM,  //  two partials, then end
    HANDLE_ERROR,   //  reply_error ("boom")
    HANDLE_REJECT,  //  reply_reject ("busy")
    HANDLE_DROP,    //  destroy without ending
    HANDLE_STOP     //  end, then stop the worker
} handle_t;

typedef struct {
    handle_t mode;
    int requests;                   //  requests seen
    pigato_reply_t *held [8];       //  kept replies (HANDLE_KEEP)
    char data [256];                //  last request data
    char service [256];             //  last reply_service ()
    char opts [256];                //  last reply_opts ()
    char rid [PIGATO_RID_MAX + 1];  //  last reply_rid ()
} handler_t;

static void
s_handler (pigato_worker_t *worker, pigato_reply_t *reply, const void *data,
           size_t size, void *arg)
{
    handler_t *handler = (handler_t *) arg;
    handler->requests++;
    snprintf (handler->data, sizeof handler->data, "%.*s", (int) size,
              (const char *) data);
    snprintf (handler->service, sizeof handler->service, "%s",
              pigato_reply_service (reply));
    snprintf (handler->opts, sizeof handler->opts, "%s",
              pigato_reply_opts (reply));
    snprintf (handler->rid, sizeof handler->rid, "%s",
              pigato_reply_rid (reply));
    assert_true (pigato_reply_active (reply));
    assert_false (pigato_reply_ended (reply));
    switch (handler->mode) {
        case HANDLE_KEEP:
            assert_true (handler->requests <= 8);
            handler->held [handler->requests - 1] = reply;
            return;
        case HANDLE_ECHO:
            assert_int_equal (pigato_reply_end (reply, data, size), 0);
            break;
        case HANDLE_STREAM:
            assert_int_equal (pigato_reply_write (reply, "p1", 2), 0);
            assert_int_equal (pigato_reply_heartbeat (reply), 0);
            assert_int_equal (pigato_reply_write (reply, "p2", 2), 0);
            assert_int_equal (pigato_reply_end (reply, "done", 4), 0);
            assert_true (pigato_reply_ended (reply));
            assert_false (pigato_reply_active (reply));
            assert_int_equal (pigato_reply_write (reply, "x", 1),
                              PIGATO_E_ENDED);
            assert_int_equal (pigato_reply_end (reply, "x", 1), PIGATO_E_ENDED);
            assert_int_equal (pigato_reply_error (reply, "x"), PIGATO_E_ENDED);
            assert_int_equal (pigato_reply_reject (reply, "x"), PIGATO_E_ENDED);
            break;
        case HANDLE_ERROR:
            assert_int_equal (pigato_reply_error (reply, "boom"), 0);
            break;
        case HANDLE_REJECT:
            assert_int_equal (pigato_reply_reject (reply, "busy"), 0);
            break;
        case HANDLE_DROP: break;
        case HANDLE_STOP:
            assert_int_equal (pigato_reply_end (reply, "bye", 3), 0);
            pigato_worker_stop (worker);
            break;
    }
    pigato_reply_destroy (&reply);
    assert_null (reply);
}

static void
s_pump (void *worker)
{
    pigato_worker_wait ((pigato_worker_t *) worker, 5);
}

static pigato_worker_t *
s_worker_new (fake_broker_t *broker, handler_t *handler)
{
    pigato_worker_t *worker = pigato_worker_new ("echo", s_handler, handler);
    assert_non_null (worker);
    if (broker->cert)
        assert_int_equal (
            pigato_worker_set_server_key (worker, broker->public_key), 0);
    else
        pigato_worker_set_insecure (worker, true);
    pigato_worker_set_heartbeat (worker, 100, 3);
    assert_int_equal (pigato_worker_connect (worker, broker->endpoint), 0);
    return worker;
}

//  Receives READY and the first heartbeat; returns the routing id.
static zframe_t *
s_ready (fake_broker_t *broker, pigato_worker_t *worker)
{
    zmsg_t *msg = fake_recv (broker, s_pump, worker, NULL, NULL, 2000);
    assert_non_null (msg);
    assert_true (
        fake_msg_is (msg, "W", "1", "echo", PIGATO__NATIVE_OFFER, NULL));
    zframe_t *id = fake_sender (msg);
    zmsg_destroy (&msg);
    msg = fake_recv (broker, s_pump, worker, NULL, NULL, 2000);
    assert_non_null (msg);
    assert_true (
        fake_msg_is (msg, "W", "4", "", "{\"concurrency\":100}", NULL));
    assert_true (zframe_eq (id, zmsg_first (msg)));
    zmsg_destroy (&msg);
    return id;
}

//  Sends a request from the fake broker: W, 2, client, service, "", rid,
//  data, opts.
static void
s_send_request (fake_broker_t *broker, zframe_t *to, const char *rid,
                const char *data, const char *opts)
{
    fake_send (broker, to, "W", "2", "client-1", "echo", "", rid, data, opts,
               NULL);
}

static void
s_ready_and_heartbeats (bool curve)
{
    fake_broker_t *broker = fake_broker_new (curve);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    assert_string_equal (pigato_worker_service (worker), "echo");
    zframe_t *id = s_ready (broker, worker);
    //  The routing id: 16 random bytes as 32 hex characters
    assert_int_equal (zframe_size (id), 32);
    char *text = zframe_strdup (id);
    assert_int_equal (strspn (text, "0123456789abcdef"), 32);
    free (text);

    //  Heartbeats every interval, announcing the concurrency
    pigato_worker_set_concurrency (worker, 7);
    int heartbeats = 0;
    int64_t start = zclock_mono ();
    zmsg_t *msg;
    while (heartbeats < 3
           && (msg = fake_recv (broker, s_pump, worker, "W", "4", 1000))) {
        //  One sent before the change may still be on its way
        if (fake_msg_is (msg, "W", "4", "", "{\"concurrency\":7}", NULL))
            heartbeats++;
        else
            assert_true (
                fake_msg_is (msg, "W", "4", "", "{\"concurrency\":100}", NULL));
        //  Answer, so the worker keeps its connection
        fake_send (broker, id, "W", "4", NULL);
        zmsg_destroy (&msg);
    }
    assert_int_equal (heartbeats, 3);
    assert_true (zclock_mono () - start >= 200);

    //  A request on this connection is answered on it
    s_send_request (broker, id, "r1", "\"hi\"", "{\"timeout\":5000}");
    msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (zframe_eq (id, zmsg_first (msg)));
    assert_true (fake_msg_is (msg, "W", "3", "client-1", "", "r1", "0",
                              "\"hi\"", "{}", NULL));
    zmsg_destroy (&msg);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    assert_null (worker);
    fake_broker_destroy (&broker);
}

static void
test_ready_and_heartbeats_plain (void **state)
{
    (void) state;
    s_ready_and_heartbeats (false);
}

static void
test_ready_and_heartbeats_curve (void **state)
{
    (void) state;
    s_ready_and_heartbeats (true);
}

static void
test_partials_then_final (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_STREAM };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    s_send_request (broker, id, "r1", "\"hi\"", "{\"timeout\":5000}");

    const char *expected [] = { "6", "p1", "6", "p2", "3", "done" };
    for (int index = 0; index < 3; index++) {
        zmsg_t *msg = fake_recv (broker, s_pump, worker, "W",
                                 expected [index * 2], 2000);
        assert_non_null (msg);
        assert_true (fake_msg_is (msg, "W", expected [index * 2], "client-1",
                                  "", "r1", "0", expected [index * 2 + 1], "{}",
                                  NULL));
        zmsg_destroy (&msg);
    }
    assert_int_equal (handler.requests, 1);
    assert_string_equal (handler.data, "\"hi\"");
    assert_string_equal (handler.service, "echo");
    assert_string_equal (handler.opts, "{\"timeout\":5000}");
    assert_string_equal (handler.rid, "r1");
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_error_reject_and_dropped (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ERROR };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);

    s_send_request (broker, id, "r1", "1", "{}");
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "3", "client-1", "", "r1", "-1",
                              "\"boom\"", "{}", NULL));
    zmsg_destroy (&msg);

    handler.mode = HANDLE_REJECT;
    s_send_request (broker, id, "r2", "1", "{}");
    msg = fake_recv (broker, s_pump, worker, "W", "7", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "7", "client-1", "", "r2", "0",
                              "\"busy\"", NULL));
    zmsg_destroy (&msg);

    //  Destroying a reply that was never ended answers E_DROPPED
    handler.mode = HANDLE_DROP;
    s_send_request (broker, id, "r3", "1", NULL);
    msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "3", "client-1", "", "r3", "-1",
                              "\"E_DROPPED\"", "{}", NULL));
    zmsg_destroy (&msg);
    //  Node brokers may send no opts: the handler sees "{}"
    assert_string_equal (handler.opts, "{}");
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  A rid is bytes: an MDP client's (made by the broker) starts with 0x00.
//  The handler gets it whole, the reply echoes it byte for byte, and the
//  broker's "attempt" opt reads through pigato_reply_attempt ().
static void
test_binary_rid_and_attempt (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    const byte rid [9] = { 0, 0, 0, 0, 0, 0, 0, 0, 7 };
    zmsg_t *msg = zmsg_new ();
    zmsg_addmem (msg, zframe_data (id), zframe_size (id));
    const char *before [] = { "W", "2", "client-1", "echo", "" };
    for (size_t index = 0; index < 5; index++)
        zmsg_addstr (msg, before [index]);
    zmsg_addmem (msg, rid, sizeof rid);
    zmsg_addstr (msg, "\"hi\"");
    zmsg_addstr (msg, "{\"retry\":2,\"attempt\":3}");
    zmsg_send (&msg, broker->router);
    s_send_request (broker, id, "r2", "2", "{}");
    for (int spins = 0; spins < 200 && handler.requests < 2; spins++)
        pigato_worker_wait (worker, 10);
    assert_int_equal (handler.requests, 2);

    pigato_reply_t *first = handler.held [0];
    size_t size = 0;
    const void *bytes = pigato_reply_rid_bytes (first, &size);
    assert_int_equal (size, sizeof rid);
    assert_memory_equal (bytes, rid, sizeof rid);
    assert_int_equal (pigato_reply_attempt (first), 3);
    assert_int_equal (pigato_reply_attempt (handler.held [1]), 1);
    assert_int_equal (pigato_reply_end (first, "ok", 2), 0);
    msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    zframe_t *echoed = zmsg_first (msg);
    for (int index = 0; index < 5; index++)
        echoed = zmsg_next (msg);
    assert_int_equal (zframe_size (echoed), sizeof rid);
    assert_memory_equal (zframe_data (echoed), rid, sizeof rid);
    zmsg_destroy (&msg);
    pigato_reply_destroy (&handler.held [0]);
    pigato_reply_end (handler.held [1], "", 0);
    pigato_reply_destroy (&handler.held [1]);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  Drives the worker for ms, answering its heartbeats and sending a
//  request heartbeat for each rid in `beat` every 100 ms.
static void
s_keep_alive (fake_broker_t *broker, pigato_worker_t *worker, zframe_t *id,
              const char **beat, int ms)
{
    int64_t until = zclock_mono () + ms;
    int64_t next_beat = 0;
    while (zclock_mono () < until) {
        if (zclock_mono () >= next_beat) {
            for (const char **rid = beat; *rid; rid++)
                fake_send (broker, id, "W", "4", "client-1", "", *rid, NULL);
            next_beat = zclock_mono () + 100;
        }
        zmsg_t *msg;
        while ((msg = zmsg_recv (broker->router))) {
            if (fake_msg_is (msg, "W", "4", "", "{\"concurrency\":100}", NULL))
                fake_send (broker, id, "W", "4", NULL);
            zmsg_destroy (&msg);
        }
        pigato_worker_wait (worker, 10);
    }
}

static void
test_reply_active_follows_heartbeats_and_timeout (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    s_send_request (broker, id, "beaten", "1", "{\"timeout\":60000}");
    s_send_request (broker, id, "short", "1", "{\"timeout\":250}");
    s_send_request (broker, id, "forgotten", "1", "{\"timeout\":60000}");
    s_send_request (broker, id, "never", "1", "{\"timeout\":-1}");
    const char *beat [] = { "beaten", "short", "never", NULL };
    s_keep_alive (broker, worker, id, beat, 100);
    assert_int_equal (handler.requests, 4);
    for (int index = 0; index < 4; index++)
        assert_true (pigato_reply_active (handler.held [index]));

    //  Past the liveness window (300 ms) and the short timeout
    s_keep_alive (broker, worker, id, beat, 500);
    assert_true (pigato_reply_active (handler.held [0]));
    assert_false (pigato_reply_active (handler.held [1]));
    assert_false (pigato_reply_active (handler.held [2]));
    assert_true (pigato_reply_active (handler.held [3]));

    //  Inactive does not mean closed: the broker drops late replies
    assert_int_equal (pigato_reply_end (handler.held [2], "late", 4), 0);
    assert_int_equal (pigato_reply_end (handler.held [0], "ok", 2), 0);
    assert_false (pigato_reply_active (handler.held [0]));
    assert_true (pigato_reply_ended (handler.held [0]));
    assert_int_equal (pigato_reply_write (handler.held [0], "x", 1),
                      PIGATO_E_ENDED);
    for (int index = 0; index < 4; index++)
        pigato_reply_destroy (&handler.held [index]);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  Reads until READY arrives from a routing id other than old_id; notes
//  whether old_id said DISCONNECT. Returns the new id.
static zframe_t *
s_ready_again (fake_broker_t *broker, pigato_worker_t *worker, zframe_t *old_id,
               bool *disconnected)
{
    zframe_t *new_id = NULL;
    int64_t deadline = zclock_mono () + 3000;
    while (!new_id && zclock_mono () < deadline) {
        zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", NULL, 100);
        if (!msg)
            continue;
        if (zframe_eq (old_id, zmsg_first (msg))
            && fake_msg_is (msg, "W", "5", NULL))
            *disconnected = true;
        if (!zframe_eq (old_id, zmsg_first (msg))
            && fake_msg_is (msg, "W", "1", "echo", PIGATO__NATIVE_OFFER, NULL))
            new_id = fake_sender (msg);
        zmsg_destroy (&msg);
    }
    return new_id;
}

static void
test_reconnect_after_liveness_loss (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *old_id = s_ready (broker, worker);
    s_send_request (broker, old_id, "r1", "1", NULL);
    while (handler.requests == 0)
        pigato_worker_wait (worker, 10);

    //  The broker stays silent: after 3 x 100 ms, DISCONNECT on the old
    //  connection and READY on a new one with a fresh routing id
    int64_t start = zclock_mono ();
    bool disconnected = false;
    zframe_t *new_id = s_ready_again (broker, worker, old_id, &disconnected);
    assert_non_null (new_id);
    assert_true (zclock_mono () - start >= 150);
    assert_int_equal (zframe_size (new_id), 32);
    //  DISCONNECT went first, on the other connection: it is there by now
    zmsg_t *msg;
    while (!disconnected
           && (msg = fake_recv (broker, s_pump, worker, "W", "5", 500))) {
        disconnected = zframe_eq (old_id, zmsg_first (msg));
        zmsg_destroy (&msg);
    }
    assert_true (disconnected);

    //  The old reply is dead: inactive, ending it sends nothing
    pigato_reply_t *old_reply = handler.held [0];
    assert_false (pigato_reply_active (old_reply));
    assert_int_equal (pigato_reply_write (old_reply, "x", 1), PIGATO_E_CLOSED);
    assert_int_equal (pigato_reply_heartbeat (old_reply), PIGATO_E_CLOSED);
    assert_int_equal (pigato_reply_end (old_reply, "x", 1), PIGATO_E_CLOSED);
    assert_true (pigato_reply_ended (old_reply));
    pigato_reply_destroy (&old_reply);
    assert_null (fake_recv (broker, s_pump, worker, "W", "3", 100));

    //  The new connection serves the same rid again
    s_send_request (broker, new_id, "r1", "1", NULL);
    while (handler.requests == 1)
        pigato_worker_wait (worker, 10);
    assert_true (pigato_reply_active (handler.held [1]));
    assert_int_equal (pigato_reply_end (handler.held [1], "ok", 2), 0);
    msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (zframe_eq (new_id, zmsg_first (msg)));
    zmsg_destroy (&msg);
    pigato_reply_destroy (&handler.held [1]);
    zframe_destroy (&old_id);
    zframe_destroy (&new_id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_broker_disconnect_means_fresh_id (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *old_id = s_ready (broker, worker);
    s_send_request (broker, old_id, "r1", "1", NULL);
    fake_send (broker, old_id, "W", "5", NULL);
    bool disconnected = false;
    zframe_t *new_id = s_ready_again (broker, worker, old_id, &disconnected);
    assert_non_null (new_id);
    assert_int_equal (handler.requests, 1);
    assert_false (pigato_reply_active (handler.held [0]));
    assert_int_equal (pigato_reply_end (handler.held [0], "x", 1),
                      PIGATO_E_CLOSED);
    pigato_reply_destroy (&handler.held [0]);
    zframe_destroy (&old_id);
    zframe_destroy (&new_id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  E_NOT_READY (the broker does not know this worker: it restarted, or a
//  heartbeat came before READY) is no refusal: the worker greets again
//  at once, and pigato serve goes on
static void
test_not_ready_means_greet_again (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *old_id = s_ready (broker, worker);  //  not acknowledged
    int64_t start = zclock_mono ();
    fake_send (broker, old_id, "W", "5", "E_NOT_READY", NULL);
    bool disconnected = false;
    zframe_t *new_id = s_ready_again (broker, worker, old_id, &disconnected);
    assert_non_null (new_id);
    assert_true (zclock_mono () - start < 400);  //  no refusal back-off
    assert_int_equal (pigato_worker_refusal (worker), PIGATO_OK);
    zframe_destroy (&old_id);
    zframe_destroy (&new_id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_stop_sends_disconnect (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_STOP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    s_send_request (broker, id, "r1", "1", NULL);
    //  run () returns once the handler stopped the worker
    assert_int_equal (pigato_worker_run (worker), 0);
    assert_int_equal (pigato_worker_wait (worker, 10), PIGATO_E_CLOSED);
    assert_int_equal (pigato_worker_connect (worker, broker->endpoint),
                      PIGATO_E_CLOSED);
    zmsg_t *msg = fake_recv (broker, NULL, NULL, "W", "3", 2000);
    assert_non_null (msg);
    zmsg_destroy (&msg);
    msg = fake_recv (broker, NULL, NULL, "W", "5", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "5", NULL));
    assert_true (zframe_eq (id, zmsg_first (msg)));
    zmsg_destroy (&msg);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  What a worker sent a fake broker while it was pumped (s_watch).
typedef struct {
    int no_room;         //  heartbeats with concurrency 0
    int rejects;         //  W, 7
    int disconnects;     //  W, 5
    int replies;         //  W, 3
    char last_rid [16];  //  the rid of the last W, 3
} seen_t;

//  Pumps the worker for ms, counting what it sends; its heartbeats are
//  answered (as pigato-broker does) when answer is set.
static void
s_watch (fake_broker_t *broker, pigato_worker_t *worker, zframe_t *id, int ms,
         bool answer, seen_t *seen)
{
    int64_t until = zclock_mono () + ms;
    while (zclock_mono () < until) {
        pigato_worker_wait (worker, 5);
        zmsg_t *msg;
        while ((msg = zmsg_recv (broker->router))) {
            if (fake_frame_is (msg, 2, "4")) {
                if (fake_frame_is (msg, 4, "{\"concurrency\":0}"))
                    seen->no_room++;
                if (answer)
                    fake_send (broker, id, "W", "4", NULL);
            }
            else if (fake_frame_is (msg, 2, "7"))
                seen->rejects++;
            else if (fake_frame_is (msg, 2, "5"))
                seen->disconnects++;
            else if (fake_frame_is (msg, 2, "3")) {
                seen->replies++;
                char *rid = fake_frame_str (msg, 5);
                snprintf (seen->last_rid, sizeof seen->last_rid, "%s", rid);
                free (rid);
            }
            zmsg_destroy (&msg);
        }
    }
}

//  Drain: a heartbeat with no room at once; a request that still comes
//  goes back as a reject, unseen by the handler; the held requests
//  finish; after the last one, DISCONNECT and run () returns 0.
static void
test_drain_finishes_what_it_holds_then_leaves (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    s_send_request (broker, id, "r1", "1", NULL);
    s_send_request (broker, id, "r2", "2", NULL);
    int64_t deadline = zclock_mono () + 2000;
    while (handler.requests < 2 && zclock_mono () < deadline)
        pigato_worker_wait (worker, 10);
    assert_int_equal (pigato_worker_pending (worker), 2);
    assert_int_equal (pigato_worker_drain (worker, -1), 0);
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", "4", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "4", "", "{\"concurrency\":0}", NULL));
    zmsg_destroy (&msg);
    s_send_request (broker, id, "r3", "3", NULL);
    msg = fake_recv (broker, s_pump, worker, "W", "7", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 5, "r3"));
    char *reason = fake_frame_str (msg, 7);
    assert_non_null (strstr (reason, "E_DRAINING"));
    free (reason);
    zmsg_destroy (&msg);
    assert_int_equal (handler.requests, 2);
    //  Heartbeats go on saying no room; one reply ended: still there
    assert_int_equal (pigato_reply_end (handler.held [0], "a", 1), 0);
    pigato_reply_destroy (&handler.held [0]);
    msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 5, "r1"));
    zmsg_destroy (&msg);
    msg = fake_recv (broker, s_pump, worker, "W", "4", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "4", "", "{\"concurrency\":0}", NULL));
    zmsg_destroy (&msg);
    assert_int_equal (pigato_worker_wait (worker, 10), 0);
    //  The last one: its reply, then DISCONNECT (this broker left some
    //  heartbeats unanswered: after one liveness period, 300 ms; the
    //  answers are test_drain_waits_for_the_broker_to_hear's)
    assert_int_equal (pigato_reply_end (handler.held [1], "b", 1), 0);
    pigato_reply_destroy (&handler.held [1]);
    assert_int_equal (pigato_worker_pending (worker), 0);
    seen_t seen = { 0 };
    s_watch (broker, worker, id, 400, true, &seen);
    assert_int_equal (seen.replies, 1);
    assert_string_equal (seen.last_rid, "r2");
    assert_int_equal (seen.disconnects, 1);
    assert_int_equal (pigato_worker_run (worker), 0);
    assert_int_equal (pigato_worker_drain (worker, -1), PIGATO_E_CLOSED);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  With nothing held, a drain leaves once the broker answered the
//  heartbeat that said no room: a request the broker sent before it heard
//  arrives first, and goes back (a reject) rather than being lost.
static void
test_drain_waits_for_the_broker_to_hear (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    fake_send (broker, id, "W", "4", NULL);  //  the greeting's heartbeat
    seen_t seen = { 0 };
    s_watch (broker, worker, id, 150, true, &seen);
    assert_int_equal (pigato_worker_drain (worker, -1), 0);
    s_send_request (broker, id, "r0", "0", NULL);
    s_watch (broker, worker, id, 150, false, &seen);
    assert_true (seen.no_room >= 1);
    assert_int_equal (seen.rejects, 1);
    assert_int_equal (seen.disconnects, 0);
    assert_int_equal (handler.requests, 0);
    s_watch (broker, worker, id, 150, true, &seen);
    assert_int_equal (seen.disconnects, 1);
    assert_int_equal (pigato_worker_wait (worker, 10), PIGATO_E_CLOSED);
    assert_int_equal (pigato_worker_run (worker), 0);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  A drain past its timeout leaves anyway, and what the worker still held
//  can no longer be answered.
static void
test_drain_leaves_at_its_timeout (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    pigato_worker_set_heartbeat (worker, 100, 20);  //  no liveness loss
    zframe_t *id = s_ready (broker, worker);
    s_send_request (broker, id, "r1", "1", NULL);
    int64_t deadline = zclock_mono () + 2000;
    while (handler.requests < 1 && zclock_mono () < deadline)
        pigato_worker_wait (worker, 10);
    assert_int_equal (handler.requests, 1);
    int64_t start = zclock_mono ();
    assert_int_equal (pigato_worker_drain (worker, 200), 0);
    assert_int_equal (pigato_worker_run (worker), 0);
    assert_true (zclock_mono () - start >= 190);
    zmsg_t *msg = fake_recv (broker, NULL, NULL, "W", "5", 2000);
    assert_non_null (msg);
    zmsg_destroy (&msg);
    assert_int_equal (pigato_reply_end (handler.held [0], "late", 4),
                      PIGATO_E_CLOSED);
    pigato_reply_destroy (&handler.held [0]);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_replies_outlive_their_worker (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    s_send_request (broker, id, "r1", "1", NULL);
    s_send_request (broker, id, "r2", "1", NULL);
    while (handler.requests < 2)
        pigato_worker_wait (worker, 10);
    assert_int_equal (pigato_reply_end (handler.held [1], "done", 4), 0);
    pigato_worker_destroy (&worker);

    //  Destroying the worker said DISCONNECT
    zmsg_t *msg = fake_recv (broker, NULL, NULL, "W", "5", 2000);
    assert_non_null (msg);
    zmsg_destroy (&msg);
    //  Its replies are detached, not dangling
    assert_false (pigato_reply_active (handler.held [0]));
    assert_int_equal (pigato_reply_write (handler.held [0], "x", 1),
                      PIGATO_E_CLOSED);
    assert_string_equal (pigato_reply_rid (handler.held [0]), "r1");
    pigato_reply_destroy (&handler.held [0]);
    assert_true (pigato_reply_ended (handler.held [1]));
    pigato_reply_destroy (&handler.held [1]);
    zframe_destroy (&id);
    fake_broker_destroy (&broker);
}

//  Receives the reject the worker sends for rid because its handler has
//  its concurrency in flight already.
static void
s_expect_over_limit (fake_broker_t *broker, pigato_worker_t *worker,
                     const char *rid)
{
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", "7", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "7", "client-1", "", rid, "0",
                              "\"E_WORKER_REFUSED over_concurrency\"", NULL));
    zmsg_destroy (&msg);
}

//  A broker that ignores the announced concurrency: what comes beyond it
//  never reaches the handler, goes back as a reject (the broker gives it
//  to another worker) and is counted; a slot comes back when a reply
//  ends, is rejected by the handler or is destroyed unended.
static void
test_concurrency_is_enforced (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    //  Held requests stay active (no request heartbeats come) for 3 s:
    //  none is forgotten by its broker, so nothing waits (see below)
    pigato_worker_set_heartbeat (worker, 1000, 3);
    pigato_worker_set_concurrency (worker, 2);
    assert_int_equal (pigato_worker_in_flight (worker), 0);
    const char *rids [] = { "r1", "r2", "r3", "r4", "r5" };
    for (int index = 0; index < 5; index++)
        s_send_request (broker, id, rids [index], "1", NULL);
    for (int index = 2; index < 5; index++)
        s_expect_over_limit (broker, worker, rids [index]);
    assert_int_equal (handler.requests, 2);
    assert_string_equal (pigato_reply_rid (handler.held [1]), "r2");
    assert_int_equal (pigato_worker_in_flight (worker), 2);
    assert_int_equal (pigato_worker_over_concurrency (worker), 3);

    //  Ended (not yet destroyed): its slot is free
    assert_int_equal (pigato_reply_end (handler.held [0], "ok", 2), 0);
    assert_int_equal (pigato_worker_in_flight (worker), 1);
    pigato_reply_destroy (&handler.held [0]);
    s_send_request (broker, id, "r6", "1", NULL);
    s_send_request (broker, id, "r7", "1", NULL);
    s_expect_over_limit (broker, worker, "r7");
    assert_int_equal (handler.requests, 3);
    assert_string_equal (pigato_reply_rid (handler.held [2]), "r6");

    //  Rejected by the handler, and destroyed unended (E_DROPPED)
    assert_int_equal (pigato_reply_reject (handler.held [1], "no"), 0);
    pigato_reply_destroy (&handler.held [1]);
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", "7", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 7, "\"no\""));
    zmsg_destroy (&msg);
    assert_int_equal (pigato_worker_in_flight (worker), 1);
    pigato_reply_destroy (&handler.held [2]);
    assert_int_equal (pigato_worker_in_flight (worker), 0);

    //  A limit lowered below what is in flight: nothing more until under
    s_send_request (broker, id, "r8", "1", NULL);
    s_send_request (broker, id, "r9", "1", NULL);
    while (handler.requests < 5)
        pigato_worker_wait (worker, 10);
    pigato_worker_set_concurrency (worker, 1);
    s_send_request (broker, id, "r10", "1", NULL);
    s_expect_over_limit (broker, worker, "r10");
    assert_int_equal (pigato_worker_over_concurrency (worker), 5);
    assert_int_equal (handler.requests, 5);

    //  Unlimited: every request reaches the handler
    pigato_worker_set_concurrency (worker, -1);
    for (int index = 0; index < 3; index++)
        s_send_request (broker, id, rids [index], "2", NULL);
    while (handler.requests < 8)
        pigato_worker_wait (worker, 10);
    assert_int_equal (pigato_worker_in_flight (worker), 5);
    assert_int_equal (pigato_worker_over_concurrency (worker), 5);
    for (int index = 3; index < 8; index++)
        pigato_reply_destroy (&handler.held [index]);
    assert_int_equal (pigato_worker_in_flight (worker), 0);
    assert_int_equal (pigato_worker_in_flight (NULL), 0);
    assert_int_equal (pigato_worker_over_concurrency (NULL), 0);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  Pumps the worker for ms.
static void
s_pump_for (pigato_worker_t *worker, int ms)
{
    int64_t until = zclock_mono () + ms;
    while (zclock_mono () < until)
        pigato_worker_wait (worker, 5);
}

//  With two brokers the limit is the worker's, not each link's: one
//  request through each fills a concurrency of 2.
static void
test_concurrency_is_per_worker_not_per_broker (void **state)
{
    (void) state;
    fake_broker_t *first = fake_broker_new (false);
    fake_broker_t *second = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (first, &handler);
    assert_int_equal (pigato_worker_connect (worker, second->endpoint), 0);
    zframe_t *first_id = s_ready (first, worker);
    zframe_t *second_id = s_ready (second, worker);
    pigato_worker_set_heartbeat (worker, 1000, 3);
    pigato_worker_set_concurrency (worker, 2);
    s_send_request (first, first_id, "a1", "1", NULL);
    s_send_request (second, second_id, "b1", "1", NULL);
    while (handler.requests < 2)
        pigato_worker_wait (worker, 10);
    //  Each broker within what it was told (2): they wait in the worker,
    //  never in the handler
    s_send_request (first, first_id, "a2", "1", NULL);
    s_send_request (second, second_id, "b2", "1", NULL);
    s_pump_for (worker, 100);
    assert_int_equal (handler.requests, 2);
    assert_int_equal (pigato_worker_in_flight (worker), 2);
    //  Beyond what its own broker was told: rejected
    s_send_request (first, first_id, "a3", "1", NULL);
    s_expect_over_limit (first, worker, "a3");
    assert_int_equal (handler.requests, 2);
    //  A slot freed through one broker serves the oldest waiting request
    assert_int_equal (pigato_reply_end (handler.held [0], "ok", 2), 0);
    pigato_reply_destroy (&handler.held [0]);
    while (handler.requests < 3)
        pigato_worker_wait (worker, 10);
    assert_string_equal (pigato_reply_rid (handler.held [2]), "a2");
    assert_int_equal (pigato_reply_end (handler.held [1], "ok", 2), 0);
    pigato_reply_destroy (&handler.held [1]);
    while (handler.requests < 4)
        pigato_worker_wait (worker, 10);
    assert_string_equal (pigato_reply_rid (handler.held [3]), "b2");
    assert_int_equal (pigato_worker_in_flight (worker), 2);
    pigato_reply_destroy (&handler.held [2]);
    pigato_reply_destroy (&handler.held [3]);
    zframe_destroy (&first_id);
    zframe_destroy (&second_id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&first);
    fake_broker_destroy (&second);
}


//  A broker that timed a request out gave its slot to the next one while
//  the handler still holds the old one: the next waits in the worker (not
//  in the handler, not rejected: it would go nowhere with one worker)
//  and takes the slot when the old one ends; one for each forgotten
//  request at most, and dropped if its own broker forgets it meanwhile.
static void
test_a_slot_the_broker_freed_early_is_waited_for (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    pigato_worker_set_heartbeat (worker, 1000, 3);
    pigato_worker_set_concurrency (worker, 1);

    s_send_request (broker, id, "r1", "1", "{\"timeout\":100}");
    while (handler.requests < 1)
        pigato_worker_wait (worker, 10);
    s_pump_for (worker, 150);  //  the broker forgot r1
    assert_false (pigato_reply_active (handler.held [0]));
    s_send_request (broker, id, "r2", "2", "{\"timeout\":300}");
    s_send_request (broker, id, "r3", "3", NULL);
    s_expect_over_limit (broker, worker, "r3");  //  one waits, no more
    assert_int_equal (handler.requests, 1);
    assert_int_equal (pigato_worker_in_flight (worker), 1);
    assert_int_equal (pigato_worker_over_concurrency (worker), 1);

    //  r2 timed out while it waited: dropped, never handed, no answer
    s_pump_for (worker, 350);
    assert_int_equal (pigato_reply_end (handler.held [0], "late", 4), 0);
    pigato_reply_destroy (&handler.held [0]);
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 5, "r1"));
    zmsg_destroy (&msg);
    s_pump_for (worker, 100);
    assert_int_equal (handler.requests, 1);
    assert_int_equal (pigato_worker_in_flight (worker), 0);

    //  The slot comes back to a request that waited for it
    s_send_request (broker, id, "r4", "4", "{\"timeout\":100}");
    while (handler.requests < 2)
        pigato_worker_wait (worker, 10);
    s_pump_for (worker, 150);
    s_send_request (broker, id, "r5", "5", "{\"timeout\":5000}");
    s_pump_for (worker, 100);
    assert_int_equal (handler.requests, 2);
    pigato_reply_destroy (&handler.held [1]);  //  E_DROPPED: ended
    while (handler.requests < 3)
        pigato_worker_wait (worker, 10);
    assert_string_equal (pigato_reply_rid (handler.held [2]), "r5");
    assert_string_equal (handler.data, "5");
    assert_int_equal (pigato_worker_in_flight (worker), 1);
    //  Over a request its broker still counts: rejected, as ever
    s_send_request (broker, id, "r6", "6", NULL);
    s_expect_over_limit (broker, worker, "r6");
    assert_int_equal (pigato_worker_over_concurrency (worker), 2);
    pigato_reply_destroy (&handler.held [2]);

    //  Waiting ones are freed with the worker
    s_send_request (broker, id, "r7", "7", "{\"timeout\":100}");
    while (handler.requests < 4)
        pigato_worker_wait (worker, 10);
    s_pump_for (worker, 150);
    s_send_request (broker, id, "r8", "8", NULL);
    s_pump_for (worker, 50);
    assert_int_equal (handler.requests, 4);
    assert_int_equal (pigato_worker_over_concurrency (worker), 2);
    pigato_reply_destroy (&handler.held [3]);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  Receives the worker's next reply of a type for rid; checks its status
//  and that its data is text (NULL: its size is data_size).
static void
s_expect_reply (fake_broker_t *broker, pigato_worker_t *worker,
                const char *type, const char *rid, const char *status,
                const char *text, size_t data_size)
{
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", type, 5000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 5, rid));
    assert_true (fake_frame_is (msg, 6, status));
    if (text)
        assert_true (fake_frame_is (msg, 7, text));
    else {
        zframe_t *data = zmsg_first (msg);
        for (int index = 0; index < 7; index++)
            data = zmsg_next (msg);
        assert_int_equal (zframe_size (data), data_size);
    }
    zmsg_destroy (&msg);
}

//  Nothing over PIGATO_BODY_MAX leaves a worker (the broker would drop
//  its connection and every request on it): that one request gets an
//  E_TOO_LARGE error reply and the call says PIGATO_E_TOO_LARGE.
static void
test_replies_over_the_limit_become_errors (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    //  16 MiB bodies take a while, and this broker answers no heartbeat
    pigato_worker_set_heartbeat (worker, 1000, 10);
    const char *rids [] = { "r1", "r2", "r3", "r4", "r5", "r6" };
    for (int index = 0; index < 6; index++)
        s_send_request (broker, id, rids [index], "1", NULL);
    while (handler.requests < 6)
        pigato_worker_wait (worker, 10);
    size_t size = PIGATO_BODY_MAX + 1;
    char *big = (char *) malloc (size + 1);
    assert_non_null (big);
    memset (big, 'x', size);
    big [size] = 0;

    assert_int_equal (pigato_reply_end (handler.held [0], big, size),
                      PIGATO_E_TOO_LARGE);
    assert_true (pigato_reply_ended (handler.held [0]));
    assert_string_equal (pigato_worker_error (worker),
                         "E_TOO_LARGE reply of 16777153 bytes exceeds the "
                         "broker's limit of 16777152 bytes");
    s_expect_reply (broker, worker, "3", "r1", "-1",
                    "\"E_TOO_LARGE reply of 16777153 bytes exceeds the "
                    "broker's limit of 16777152 bytes\"",
                    0);

    //  A partial ends the request too: a stream with a hole is no reply
    assert_int_equal (pigato_reply_write (handler.held [1], big, size),
                      PIGATO_E_TOO_LARGE);
    assert_int_equal (pigato_reply_end (handler.held [1], "x", 1),
                      PIGATO_E_ENDED);
    s_expect_reply (broker, worker, "3", "r2", "-1",
                    "\"E_TOO_LARGE partial reply of 16777153 bytes exceeds "
                    "the broker's limit of 16777152 bytes\"",
                    0);

    //  An error message and a reject reason are bodies too (as JSON)
    big [size - 2] = 0;
    assert_int_equal (pigato_reply_error (handler.held [2], big),
                      PIGATO_E_TOO_LARGE);
    s_expect_reply (broker, worker, "3", "r3", "-1",
                    "\"E_TOO_LARGE error message of 16777153 bytes exceeds "
                    "the broker's limit of 16777152 bytes\"",
                    0);
    assert_int_equal (pigato_reply_reject (handler.held [3], big),
                      PIGATO_E_TOO_LARGE);
    s_expect_reply (broker, worker, "7", "r4", "0",
                    "\"E_TOO_LARGE reject reason of 16777153 bytes exceeds "
                    "the broker's limit of 16777152 bytes\"",
                    0);

    //  At the limit it goes, and the connection still carries replies
    assert_int_equal (pigato_reply_end (handler.held [4], big, PIGATO_BODY_MAX),
                      0);
    s_expect_reply (broker, worker, "3", "r5", "0", NULL, PIGATO_BODY_MAX);
    assert_int_equal (pigato_reply_end (handler.held [5], "ok", 2), 0);
    s_expect_reply (broker, worker, "3", "r6", "0", "ok", 0);

    for (int index = 0; index < 6; index++)
        pigato_reply_destroy (&handler.held [index]);
    free (big);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_malformed_broker_messages_are_dropped (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_ready (broker, worker);
    char long_rid [200];
    memset (long_rid, 'r', sizeof long_rid - 1);
    long_rid [sizeof long_rid - 1] = 0;

    fake_send (broker, id, "X", NULL);
    fake_send (broker, id, "W", NULL);
    fake_send (broker, id, "W", "2", NULL);
    fake_send (broker, id, "W", "2", "client-1", NULL);
    fake_send (broker, id, "W", "2", "client-1", "echo", "", "", "1", NULL);
    fake_send (broker, id, "W", "2", "client-1", "echo", "", long_rid, "1",
               NULL);
    fake_send (broker, id, "W", "2", "client-1", "", "", "r0", "1", NULL);
    fake_send (broker, id, "W", "9", NULL);
    fake_send (broker, id, "W", "3", "client-1", "", "r0", "0", "1", NULL);
    fake_send (broker, id, "C", "2", "client-1", "echo", "", "r0", "1", NULL);
    fake_send (broker, id, "W", "4", "client-1", NULL);
    fake_send (broker, id, "W", "4", "client-1", "", "unknown", NULL);
    fake_send (broker, id, "W", "2", "client-1", "echo", "", "r0", "1", "{}",
               "a", "b", "c", "d", "e", "f", "g", NULL);
    //  Opts that are not a JSON object reach the handler as "{}"
    fake_send (broker, id, "W", "2", "client-1", "echo", "", "good", "ok",
               "undefined", NULL);
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "3", "client-1", "", "good", "0", "ok",
                              "{}", NULL));
    zmsg_destroy (&msg);
    assert_int_equal (handler.requests, 1);
    assert_string_equal (handler.opts, "{}");
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_invalid_arguments (void **state)
{
    (void) state;
    handler_t handler = { .mode = HANDLE_ECHO };
    assert_null (pigato_worker_new (NULL, s_handler, &handler));
    assert_null (pigato_worker_new ("", s_handler, &handler));
    assert_null (pigato_worker_new ("echo", NULL, &handler));
    char long_name [PIGATO_SERVICE_MAX + 2];
    memset (long_name, 's', sizeof long_name - 1);
    long_name [sizeof long_name - 1] = 0;
    assert_null (pigato_worker_new (long_name, s_handler, &handler));

    assert_int_equal (pigato_reply_end (NULL, "x", 1), PIGATO_E_INVALID);
    assert_int_equal (pigato_reply_write (NULL, "x", 1), PIGATO_E_INVALID);
    assert_int_equal (pigato_reply_error (NULL, "x"), PIGATO_E_INVALID);
    assert_false (pigato_reply_active (NULL));
    pigato_reply_destroy (NULL);

    pigato_worker_t *worker = pigato_worker_new ("echo", s_handler, &handler);
    assert_int_equal (pigato_worker_connect (worker, "tcp://127.0.0.1:1"),
                      PIGATO_E_KEY);
    assert_int_equal (pigato_worker_set_server_key (worker, "nope"),
                      PIGATO_E_KEY);
    assert_non_null (strstr (pigato_worker_error (worker), "nope"));
    assert_int_equal (pigato_worker_set_key_file (worker, "/nope/w.key"),
                      PIGATO_E_KEY);
    //  No broker at all: wait has nothing to wait for
    assert_int_equal (pigato_worker_wait (worker, -1), 0);
    pigato_worker_destroy (&worker);
    pigato_worker_destroy (&worker);
}

static void
test_worker_on_two_brokers (void **state)
{
    (void) state;
    fake_broker_t *first = fake_broker_new (false);
    fake_broker_t *second = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (first, &handler);
    assert_int_equal (pigato_worker_connect (worker, second->endpoint), 0);
    zframe_t *first_id = s_ready (first, worker);
    zframe_t *second_id = s_ready (second, worker);
    assert_false (zframe_eq (first_id, second_id));
    s_send_request (second, second_id, "r2", "two", NULL);
    zmsg_t *msg = fake_recv (second, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 7, "two"));
    zmsg_destroy (&msg);
    zframe_destroy (&first_id);
    zframe_destroy (&second_id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&first);
    fake_broker_destroy (&second);
}

//  One broker of two dies (its connection ends): the other keeps serving
//  on the same connection, and the worker is back on the dead one as soon
//  as it listens again, well before heartbeats could have told.
static void
test_worker_survives_a_broker_dying (void **state)
{
    (void) state;
    fake_broker_t *first = fake_broker_new (false);
    fake_broker_t *second = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (first, &handler);
    pigato_worker_set_heartbeat (worker, 100, 50);  //  5 s of silence
    assert_int_equal (pigato_worker_connect (worker, second->endpoint), 0);
    zframe_t *first_id = s_ready (first, worker);
    zframe_t *second_id = s_ready (second, worker);
    //  The broker answers READY, as brokers do: it has spoken
    fake_send (first, first_id, "W", "1", NULL);
    for (int round = 0; round < 10; round++)
        pigato_worker_wait (worker, 5);
    char endpoint [256];
    snprintf (endpoint, sizeof endpoint, "%s", first->endpoint);
    fake_broker_destroy (&first);
    int64_t died = zclock_mono ();

    //  The other broker is served as before, on the same connection
    s_send_request (second, second_id, "r2", "two", NULL);
    zmsg_t *msg = fake_recv (second, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (zframe_eq (second_id, zmsg_first (msg)));
    assert_true (fake_frame_is (msg, 7, "two"));
    zmsg_destroy (&msg);

    //  The dead broker comes back on its endpoint: READY on a new
    //  connection, and requests through it are served
    first = fake_broker_new_at (false, endpoint);
    assert_non_null (first);
    msg = fake_recv (first, s_pump, worker, "W", "1", 3000);
    assert_non_null (msg);
    assert_true (zclock_mono () - died < 3000);
    zframe_t *new_id = fake_sender (msg);
    assert_false (zframe_eq (first_id, new_id));
    zmsg_destroy (&msg);
    s_send_request (first, new_id, "r1", "one", NULL);
    msg = fake_recv (first, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 7, "one"));
    zmsg_destroy (&msg);
    //  Still the same connection to the other one
    s_send_request (second, second_id, "r3", "three", NULL);
    msg = fake_recv (second, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_frame_is (msg, 7, "three"));
    zmsg_destroy (&msg);
    assert_null (fake_recv (second, s_pump, worker, "W", "5", 100));
    zframe_destroy (&first_id);
    zframe_destroy (&second_id);
    zframe_destroy (&new_id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&first);
    fake_broker_destroy (&second);
}

//  zloop test: the fake broker sends a request once READY arrives and
//  notes the final reply; a timer ends the loop then.
typedef struct {
    fake_broker_t *broker;
    bool answered;
} loop_state_t;

static int
s_loop_broker (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    loop_state_t *state = (loop_state_t *) arg;
    zmsg_t *msg;
    while ((msg = zmsg_recv (state->broker->router))) {
        zframe_t *to = fake_sender (msg);
        if (fake_msg_is (msg, "W", "1", "echo", PIGATO__NATIVE_OFFER, NULL))
            s_send_request (state->broker, to, "r1", "looped", NULL);
        if (fake_msg_is (msg, "W", "3", "client-1", "", "r1", "0", "looped",
                         "{}", NULL))
            state->answered = true;
        zframe_destroy (&to);
        zmsg_destroy (&msg);
    }
    return 0;
}

static int
s_loop_check (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    return ((loop_state_t *) arg)->answered ? -1 : 0;
}

static void
test_attached_to_zloop (void **state)
{
    (void) state;
    loop_state_t loop_state = { .broker = fake_broker_new (false) };
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (loop_state.broker, &handler);
    zloop_t *loop = zloop_new ();
    assert_int_equal (pigato_worker_attach (worker, loop), 0);
    zloop_reader (loop, loop_state.broker->router, s_loop_broker, &loop_state);
    zloop_timer (loop, 10, 0, s_loop_check, &loop_state);
    zloop_timer (loop, 3000, 1, fake_loop_give_up, NULL);
    zloop_start (loop);
    assert_true (loop_state.answered);
    pigato_worker_destroy (&worker);
    zloop_destroy (&loop);
    fake_broker_destroy (&loop_state.broker);
}

//  Takes every log line (so all logging paths run) and drops it.
static void
s_log_sink (int level, const char *line, void *arg)
{
    (void) level;
    (void) arg;
    assert_non_null (line);
}

//  --------------------------------------------------------------------------
//  Native framing (docs/native-framing.md)

#define S_BYTES(text)                                                          \
    ((pigato__bytes_t) { (const byte *) (text), strlen (text) })

static bool
s_eq_bytes (pigato__bytes_t bytes, const char *text)
{
    return bytes.size == strlen (text)
        && (bytes.size == 0 || memcmp (bytes.data, text, bytes.size) == 0);
}

//  A broker -> worker entry; client and rid set for requests.
static pigato__msg_t
s_entry (int type, const char *rid, const char *body)
{
    pigato__msg_t entry;
    memset (&entry, 0, sizeof entry);
    entry.role = 'W';
    entry.type = type;
    if (type == PIGATO__REQUEST) {
        entry.client = S_BYTES ("client-1");
        entry.service = S_BYTES ("echo");
        entry.opts = S_BYTES ("{\"timeout\":5000}");
    }
    entry.rid = S_BYTES (rid ? rid : "");
    entry.data = S_BYTES (body ? body : "");
    return entry;
}

//  Takes READY (with the offer) and the first heartbeat, answers READY in
//  native framing and lets the worker read it. Returns the routing id.
static zframe_t *
s_go_native (fake_broker_t *broker, pigato_worker_t *worker)
{
    zframe_t *id = s_ready (broker, worker);
    pigato__msg_t ready = s_entry (PIGATO__READY, NULL, NULL);
    fake_native_send (broker, id, 'W', &ready, 1);
    pigato_worker_wait (worker, 1000);
    return id;
}

//  Next native message from the worker (pumping it when pump), read as the
//  broker would; asserts it is well formed.
static int
s_recv_native (fake_broker_t *broker, pigato_worker_t *worker, bool pump,
               pigato__msg_t *entries, size_t max, zmsg_t **msg_p)
{
    *msg_p = fake_recv_native (broker, pump ? s_pump : NULL, worker, 2000);
    assert_non_null (*msg_p);
    int count = fake_native_read (*msg_p, entries, max);
    assert_true (count > 0);
    return count;
}

static void
test_native_replies_to_a_batch_leave_as_one_batch (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (true);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_go_native (broker, worker);
    pigato__msg_t requests [5];
    const char *rids [5] = { "r0", "r1", "r2", "r3", "r4" };
    const char *bodies [5] = { "a", "b", "c", "d", "e" };
    for (int index = 0; index < 5; index++)
        requests [index] = s_entry (PIGATO__REQUEST, rids [index],
                                    bodies [index]);
    fake_native_send (broker, id, 'W', requests, 5);

    pigato__msg_t entries [16];
    zmsg_t *msg = NULL;
    int count = 0;
    int64_t deadline = zclock_mono () + 2000;
    while (zclock_mono () < deadline) {
        count = s_recv_native (broker, worker, true, entries, 16, &msg);
        if (fake_count_type (entries, count, PIGATO__REPLY) > 0)
            break;
        zmsg_destroy (&msg);  //  a heartbeat batch
    }
    assert_non_null (msg);
    assert_true (zframe_eq (id, zmsg_first (msg)));
    //  All five replies in the one message, in request order
    assert_int_equal (fake_count_type (entries, count, PIGATO__REPLY), 5);
    int seen = 0;
    for (int index = 0; index < count; index++) {
        if (entries [index].type != PIGATO__REPLY)
            continue;
        assert_true (s_eq_bytes (entries [index].client, "client-1"));
        assert_true (s_eq_bytes (entries [index].rid, rids [seen]));
        assert_true (s_eq_bytes (entries [index].data, bodies [seen]));
        assert_int_equal (entries [index].status, 0);
        seen++;
    }
    zmsg_destroy (&msg);
    assert_int_equal (handler.requests, 5);
    assert_string_equal (handler.opts, "{\"timeout\":5000}");
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_native_partials_keep_their_order (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_STREAM };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_go_native (broker, worker);
    pigato__msg_t request = s_entry (PIGATO__REQUEST, "r1", "x");
    fake_native_send (broker, id, 'W', &request, 1);
    pigato__msg_t entries [16];
    zmsg_t *msg = NULL;
    int count = 0;
    int64_t deadline = zclock_mono () + 2000;
    while (zclock_mono () < deadline) {
        count = s_recv_native (broker, worker, true, entries, 16, &msg);
        if (fake_count_type (entries, count, PIGATO__PARTIAL) > 0)
            break;
        zmsg_destroy (&msg);
    }
    assert_non_null (msg);
    //  p1, the handler's heartbeat, p2, done: one message, in order
    int types [8], used = 0;
    for (int index = 0; index < count && used < 8; index++)
        types [used++] = entries [index].type;
    assert_true (used >= 4);
    assert_int_equal (types [used - 4], PIGATO__PARTIAL);
    assert_int_equal (types [used - 3], PIGATO__HEARTBEAT);
    assert_int_equal (types [used - 2], PIGATO__PARTIAL);
    assert_int_equal (types [used - 1], PIGATO__REPLY);
    assert_true (s_eq_bytes (entries [used - 4].data, "p1"));
    assert_true (s_eq_bytes (entries [used - 3].opts, "{\"concurrency\":100}"));
    assert_true (s_eq_bytes (entries [used - 2].data, "p2"));
    assert_true (s_eq_bytes (entries [used - 1].data, "done"));
    zmsg_destroy (&msg);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_native_reply_outside_the_handler_is_sent_at_once (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_KEEP };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_go_native (broker, worker);
    size_t size = 9000;
    char *big = (char *) malloc (size + 1);
    memset (big, 'z', size);
    big [size] = 0;
    //  A large request body arrives as an external frame
    pigato__msg_t request = s_entry (PIGATO__REQUEST, "r1", big);
    fake_native_send (broker, id, 'W', &request, 1);
    int64_t deadline = zclock_mono () + 2000;
    while (handler.requests == 0 && zclock_mono () < deadline)
        pigato_worker_wait (worker, 10);
    assert_int_equal (handler.requests, 1);
    assert_int_equal (strlen (handler.data), sizeof handler.data - 1);

    //  Ended from the test's own code: sent without the worker running,
    //  its large body in a frame of its own
    big [0] = 'A';
    assert_int_equal (pigato_reply_end (handler.held [0], big, size), 0);
    pigato__msg_t entries [4];
    zmsg_t *msg;
    assert_int_equal (s_recv_native (broker, worker, false, entries, 4, &msg),
                      1);
    assert_int_equal (entries [0].type, PIGATO__REPLY);
    assert_int_equal (zmsg_size (msg), 3);
    assert_int_equal (entries [0].data.size, size);
    assert_memory_equal (entries [0].data.data, big, size);
    zmsg_destroy (&msg);
    pigato_reply_destroy (&handler.held [0]);
    free (big);
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_framing_046_never_offers (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = pigato_worker_new ("echo", s_handler, &handler);
    pigato_worker_set_insecure (worker, true);
    pigato_worker_set_heartbeat (worker, 100, 3);
    assert_int_equal (pigato_worker_set_framing (worker, "nativ"),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_worker_set_framing (NULL, "auto"),
                      PIGATO_E_INVALID);
    assert_int_equal (pigato_worker_set_framing (worker, "0.0.46"), 0);
    assert_int_equal (pigato_worker_connect (worker, broker->endpoint), 0);
    zmsg_t *msg = fake_recv (broker, s_pump, worker, "W", "1", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "1", "echo", NULL));
    zframe_t *id = fake_sender (msg);
    zmsg_destroy (&msg);
    //  A native request is read, but answered in 0.0.46 framing
    pigato__msg_t request = s_entry (PIGATO__REQUEST, "r1", "hi");
    fake_native_send (broker, id, 'W', &request, 1);
    msg = fake_recv (broker, s_pump, worker, "W", "3", 2000);
    assert_non_null (msg);
    assert_true (fake_msg_is (msg, "W", "3", "client-1", "", "r1", "0", "hi",
                              "{}", NULL));
    zmsg_destroy (&msg);
    assert_null (fake_recv_native (broker, s_pump, worker, 300));
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_framing_native_from_the_start (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = pigato_worker_new ("echo", s_handler, &handler);
    pigato_worker_set_insecure (worker, true);
    pigato_worker_set_heartbeat (worker, 100, 3);
    assert_int_equal (pigato_worker_set_framing (worker, "native"), 0);
    assert_int_equal (pigato_worker_connect (worker, broker->endpoint), 0);
    //  READY and the first heartbeat: one native message, no offer
    pigato__msg_t entries [4];
    zmsg_t *msg;
    assert_int_equal (s_recv_native (broker, worker, false, entries, 4, &msg),
                      2);
    assert_int_equal (entries [0].type, PIGATO__READY);
    assert_true (s_eq_bytes (entries [0].service, "echo"));
    assert_int_equal (entries [1].type, PIGATO__HEARTBEAT);
    assert_true (s_eq_bytes (entries [1].opts, "{\"concurrency\":100}"));
    zmsg_destroy (&msg);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_malformed_native_batches_are_dropped (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *id = s_go_native (broker, worker);
    pigato__native_writer_t writer;
    pigato__native_writer_init (&writer, 'W');
    pigato__msg_t request = s_entry (PIGATO__REQUEST, "bad", "x");
    assert_int_equal (pigato__native_writer_add (&writer, &request, false), 0);
    byte frame [512];
    size_t size = writer.size;
    memcpy (frame, writer.data, size);
    //  Every cut; a good request then a broken entry; a client-side
    //  batch; an unused frame; a missing external body
    for (size_t cut = 0; cut < size; cut++)
        fake_send_raw (broker, id, frame, cut, 0, 0);
    memcpy (frame + size, "\x02\0\0\0\0\0\0\0\0\0\0\0", 12);
    fake_send_raw (broker, id, frame, size + 12, 0, 0);
    frame [2] = 'C';
    fake_send_raw (broker, id, frame, size, 0, 0);
    frame [2] = 'W';
    fake_send_raw (broker, id, frame, size, 1, 5);
    pigato__native_writer_reset (&writer);
    assert_int_equal (pigato__native_writer_add (&writer, &request, true), 0);
    fake_send_raw (broker, id, writer.data, writer.size, 0, 0);
    pigato__native_writer_free (&writer);
    //  Then a good one
    request = s_entry (PIGATO__REQUEST, "good", "y");
    fake_native_send (broker, id, 'W', &request, 1);
    int64_t deadline = zclock_mono () + 2000;
    while (handler.requests == 0 && zclock_mono () < deadline)
        pigato_worker_wait (worker, 10);
    pigato_worker_wait (worker, 50);
    assert_int_equal (handler.requests, 1);
    assert_string_equal (handler.rid, "good");
    zframe_destroy (&id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

static void
test_native_disconnect_ends_the_batch (void **state)
{
    (void) state;
    fake_broker_t *broker = fake_broker_new (false);
    handler_t handler = { .mode = HANDLE_ECHO };
    pigato_worker_t *worker = s_worker_new (broker, &handler);
    zframe_t *old_id = s_go_native (broker, worker);
    //  What follows DISCONNECT belonged to the old connection
    pigato__msg_t entries [2] = { s_entry (PIGATO__DISCONNECT, NULL, NULL),
                                  s_entry (PIGATO__REQUEST, "late", "x") };
    fake_native_send (broker, old_id, 'W', entries, 2);
    bool disconnected = false;
    zframe_t *new_id = s_ready_again (broker, worker, old_id, &disconnected);
    assert_non_null (new_id);
    assert_false (disconnected);  //  the broker asked: no W 5 back
    assert_int_equal (handler.requests, 0);
    zframe_destroy (&old_id);
    zframe_destroy (&new_id);
    pigato_worker_destroy (&worker);
    fake_broker_destroy (&broker);
}

//  The outbound budget: as the client's (test_client.c).
static void
test_outbound_budget_setting (void **state)
{
    (void) state;
    pigato_worker_t *worker = pigato_worker_new ("echo", s_handler, NULL);
    assert_int_equal (pigato_worker_set_max_outbound (worker, 64LL << 20), 0);
    assert_int_equal (pigato_worker_set_max_outbound (worker, 0),
                      PIGATO_E_INVALID);
    assert_string_equal (pigato_worker_error (worker),
                         "the outbound budget must be from 1048576 bytes (1 "
                         "MiB) to 1099511627776 (1 TiB), not 0");
    assert_int_equal (pigato_worker_set_max_outbound (NULL, 1 << 20),
                      PIGATO_E_INVALID);
    pigato_worker_destroy (&worker);
}

int
main (void)
{
    pigato_log_set (PIGATO_LOG_DEBUG, s_log_sink, NULL);
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_ready_and_heartbeats_plain),
        cmocka_unit_test (test_ready_and_heartbeats_curve),
        cmocka_unit_test (test_partials_then_final),
        cmocka_unit_test (test_error_reject_and_dropped),
        cmocka_unit_test (test_binary_rid_and_attempt),
        cmocka_unit_test (test_reply_active_follows_heartbeats_and_timeout),
        cmocka_unit_test (test_reconnect_after_liveness_loss),
        cmocka_unit_test (test_broker_disconnect_means_fresh_id),
        cmocka_unit_test (test_not_ready_means_greet_again),
        cmocka_unit_test (test_stop_sends_disconnect),
        cmocka_unit_test (test_drain_finishes_what_it_holds_then_leaves),
        cmocka_unit_test (test_drain_waits_for_the_broker_to_hear),
        cmocka_unit_test (test_drain_leaves_at_its_timeout),
        cmocka_unit_test (test_replies_outlive_their_worker),
        cmocka_unit_test (test_concurrency_is_enforced),
        cmocka_unit_test (test_concurrency_is_per_worker_not_per_broker),
        cmocka_unit_test (test_a_slot_the_broker_freed_early_is_waited_for),
        cmocka_unit_test (test_replies_over_the_limit_become_errors),
        cmocka_unit_test (test_malformed_broker_messages_are_dropped),
        cmocka_unit_test (test_invalid_arguments),
        cmocka_unit_test (test_worker_on_two_brokers),
        cmocka_unit_test (test_worker_survives_a_broker_dying),
        cmocka_unit_test (test_attached_to_zloop),
        cmocka_unit_test (test_native_replies_to_a_batch_leave_as_one_batch),
        cmocka_unit_test (test_native_partials_keep_their_order),
        cmocka_unit_test (
            test_native_reply_outside_the_handler_is_sent_at_once),
        cmocka_unit_test (test_framing_046_never_offers),
        cmocka_unit_test (test_framing_native_from_the_start),
        cmocka_unit_test (test_malformed_native_batches_are_dropped),
        cmocka_unit_test (test_native_disconnect_ends_the_batch),
        cmocka_unit_test (test_outbound_budget_setting),
    };
    int failed = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return failed;
}
