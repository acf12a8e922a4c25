/*  test_core.c - the broker's routing core (mesh/broker/core.h) without a
    broker process or a socket: requests are submitted and workers added
    as the front-ends would, and what the core decides is read from a
    recording send interface. Dispatch order, load and rand modes,
    concurrency limits, reject to another worker, retry on worker loss,
    expiry, targeting, wildcard and version resolution, the reply cache,
    $dir and MMI (what each caller may see, their bound and quota), a
    drain (what is refused, told, handed back, served and abandoned).
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include "../../mesh/broker/core.h"
#include "../../auth/acl.h"

//  --------------------------------------------------------------------------
//  A recording send interface

typedef enum {
    EV_REQUEST,
    EV_HEARTBEAT,
    EV_REPLY,
    EV_ERROR,
    EV_CONTROL,
    EV_NOTICE
} kind_t;

typedef struct {
    kind_t kind;
    char to [64];               //  worker routing id or client
    char client [64];           //  the client field a worker is sent
    int fd;                     //  the connection a reply goes to
    char rid [64];              //  rid (requests, replies)
    char body [256];            //  body or error text
    char opts [256];            //  request opts a worker is sent
    int type;                   //  reply or control type
    int status;                 //  reply status
    pigato__framing_t framing;  //  the receiver's framing
} event_t;

#define EVENTS_MAX 4096
static event_t events [EVENTS_MAX];
static size_t event_count;

static void
s_text (char *out, size_t size, const pigato__bytes_t *bytes)
{
    size_t length = bytes && bytes->size < size ? bytes->size : 0;
    if (bytes && bytes->size >= size)
        length = size - 1;
    if (length)
        memcpy (out, bytes->data, length);
    out [length] = 0;
}

static event_t *
s_record (kind_t kind)
{
    assert_true (event_count < EVENTS_MAX);
    event_t *event = &events [event_count++];
    memset (event, 0, sizeof *event);
    event->kind = kind;
    return event;
}

static void
s_on_request (void *arg, pigato__worker_t *worker, pigato__request_t *request)
{
    (void) arg;
    event_t *event = s_record (EV_REQUEST);
    pigato__bytes_t id = pigato__worker_routing_id (worker);
    pigato__bytes_t rid = pigato__request_rid (request);
    pigato__bytes_t body = pigato__request_body (request);
    pigato__bytes_t client = pigato__request_alias (request);
    s_text (event->to, sizeof event->to, &id);
    s_text (event->client, sizeof event->client, &client);
    s_text (event->rid, sizeof event->rid, &rid);
    s_text (event->body, sizeof event->body, &body);
    pigato__bytes_t opts = { request->opts, request->opts_size };
    s_text (event->opts, sizeof event->opts, &opts);
    event->framing = worker->framing;
}

static void
s_on_heartbeat (void *arg, pigato__worker_t *worker, pigato__request_t *request)
{
    (void) arg;
    event_t *event = s_record (EV_HEARTBEAT);
    pigato__bytes_t id = pigato__worker_routing_id (worker);
    pigato__bytes_t rid = pigato__request_rid (request);
    pigato__bytes_t client = pigato__request_alias (request);
    s_text (event->to, sizeof event->to, &id);
    s_text (event->client, sizeof event->client, &client);
    s_text (event->rid, sizeof event->rid, &rid);
}

static void
s_on_reply (void *arg, const pigato__caller_t *to, int type, int status,
            const pigato__bytes_t *body, size_t body_count,
            const pigato__bytes_t *opts, zmq_msg_t *body_part)
{
    (void) arg;
    (void) opts;
    (void) body_part;
    event_t *event = s_record (EV_REPLY);
    s_text (event->to, sizeof event->to, &to->client);
    event->fd = to->conn.fd;
    s_text (event->rid, sizeof event->rid, &to->rid);
    if (body_count)
        s_text (event->body, sizeof event->body, &body [0]);
    event->type = type;
    event->status = status;
    event->framing = to->framing;
}

static void
s_on_error (void *arg, const pigato__caller_t *to, const char *text)
{
    (void) arg;
    event_t *event = s_record (EV_ERROR);
    s_text (event->to, sizeof event->to, &to->client);
    s_text (event->rid, sizeof event->rid, &to->rid);
    snprintf (event->body, sizeof event->body, "%s", text);
    event->framing = to->framing;
}

static void
s_on_control (void *arg, const pigato__bytes_t *worker,
              const pigato__conn_t *conn, int type, pigato__framing_t framing)
{
    (void) arg;
    (void) conn;
    event_t *event = s_record (EV_CONTROL);
    s_text (event->to, sizeof event->to, worker);
    event->type = type;
    event->framing = framing;
}

static void
s_on_notice (void *arg, const pigato__caller_t *to)
{
    (void) arg;
    event_t *event = s_record (EV_NOTICE);
    s_text (event->to, sizeof event->to, &to->client);
    event->fd = to->conn.fd;
    event->framing = to->framing;
}

static const pigato__emit_t recorder = { .request = s_on_request,
                                         .request_heartbeat = s_on_heartbeat,
                                         .reply = s_on_reply,
                                         .error = s_on_error,
                                         .control = s_on_control,
                                         .notice = s_on_notice };

//  --------------------------------------------------------------------------
//  Driving the core as a front-end would

static pigato__bytes_t
s_bytes (const char *text)
{
    return (pigato__bytes_t) { (const byte *) text, text ? strlen (text) : 0 };
}

static pigato__core_t *
s_core (void)
{
    event_count = 0;
    pigato__core_t *core = pigato__core_new (&recorder, NULL);
    assert_non_null (core);
    core->now_ms = 1000000;
    //  The monitor saw every test connection open (generation 1)
    for (int fd = 1; fd < 128; fd++)
        pigato__conns_accepted (core->conns, fd);
    return core;
}

//  Connection numbers: each peer its own fd, so a lost connection is one
//  peer's
static pigato__conn_t
s_conn (int fd)
{
    return (pigato__conn_t) { fd, 1 };
}

static pigato__worker_t *
s_add_worker_as (pigato__core_t *core, const char *id, const char *service,
                 int fd, const char *identity)
{
    pigato__bytes_t id_bytes = s_bytes (id), name = s_bytes (service);
    pigato__conn_t conn = s_conn (fd);
    size_t before = event_count;
    assert_int_equal (pigato__core_worker_add (core, &id_bytes, &name,
                                               PIGATO__FRAMING_046, &conn,
                                               identity, NULL),
                      0);
    //  The first thing it hears is its READY acknowledged
    assert_true (event_count > before);
    assert_int_equal (events [before].kind, EV_CONTROL);
    assert_int_equal (events [before].type, PIGATO__READY);
    assert_string_equal (events [before].to, id);
    pigato__worker_t *worker = pigato__core_worker_of (core, &id_bytes);
    assert_non_null (worker);
    return worker;
}

static pigato__worker_t *
s_add_worker (pigato__core_t *core, const char *id, const char *service, int fd)
{
    return s_add_worker_as (core, id, service, fd, "worker");
}

static int
s_submit_as (pigato__core_t *core, const char *identity, const char *client,
             const char *rid, const char *service, const char *body,
             const char *opts, int fd, char *error)
{
    pigato__bytes_t opts_bytes = s_bytes (opts);
    pigato__submit_t submit = { .caller = { .framing = PIGATO__FRAMING_046,
                                            .client = s_bytes (client),
                                            .conn = s_conn (fd),
                                            .rid = s_bytes (rid),
                                            .service = s_bytes (service) },
                                .name = service,
                                .body = s_bytes (body),
                                .opts = opts ? &opts_bytes : NULL,
                                .identity = identity };
    char scratch [700];
    return pigato__core_submit (core, &submit, error ? error : scratch, 700);
}

//  A request in a given framing (s_submit_as's are 0.0.46), from alice
//  on fd; 0 or the status, with the reply text in error.
static int
s_submit_framed (pigato__core_t *core, pigato__framing_t framing,
                 const char *client, const char *rid, const char *service,
                 const char *opts, int fd, char *error)
{
    pigato__bytes_t opts_bytes = s_bytes (opts);
    pigato__submit_t submit = { .caller = { .framing = framing,
                                            .client = s_bytes (client),
                                            .conn = s_conn (fd),
                                            .rid = s_bytes (rid),
                                            .service = s_bytes (service) },
                                .name = service,
                                .body = s_bytes ("x"),
                                .opts = opts ? &opts_bytes : NULL,
                                .identity = "alice" };
    char scratch [700];
    return pigato__core_submit (core, &submit, error ? error : scratch, 700);
}

static int
s_submit_full (pigato__core_t *core, const char *client, const char *rid,
               const char *service, const char *body, const char *opts, int fd,
               char *error)
{
    return s_submit_as (core, "alice", client, rid, service, body, opts, fd,
                        error);
}

static void
s_submit (pigato__core_t *core, const char *client, const char *rid,
          const char *service, const char *body, const char *opts)
{
    assert_int_equal (
        s_submit_full (core, client, rid, service, body, opts, 100, NULL), 0);
}

//  A worker's reply with the client field as given: what it was sent, an
//  alias (alias.h), or anything else.
static bool
s_reply_as (pigato__core_t *core, pigato__worker_t *worker, const char *field,
            const char *rid, int type, const char *body, const char *opts)
{
    pigato__bytes_t field_bytes = s_bytes (field), rid_bytes = s_bytes (rid);
    pigato__bytes_t body_bytes = s_bytes (body), opts_bytes = s_bytes (opts);
    return pigato__core_worker_reply (core, worker, &field_bytes, &rid_bytes,
                                      type, 0, &body_bytes, 1, &opts_bytes,
                                      NULL);
}

//  The alias the core shows workers for client on fd's connection.
static const char *
s_alias (pigato__core_t *core, const char *client, int fd)
{
    static char text [PIGATO__ALIAS_SIZE + 1];
    pigato__bytes_t client_bytes = s_bytes (client);
    pigato__conn_t conn = s_conn (fd);
    memcpy (text, pigato__aliases_get (core->aliases, &client_bytes, &conn),
            PIGATO__ALIAS_SIZE);
    text [PIGATO__ALIAS_SIZE] = 0;
    return text;
}

//  The reply of a worker to a request of client (on fd 100, s_submit's):
//  the client field is that client's alias, as the worker was sent it.
static bool
s_reply (pigato__core_t *core, pigato__worker_t *worker, const char *client,
         const char *rid, int type, const char *body, const char *opts)
{
    return s_reply_as (core, worker, s_alias (core, client, 100), rid, type,
                       body, opts);
}

//  The same for a client on another connection (fd).
static bool
s_reply_on (pigato__core_t *core, pigato__worker_t *worker, const char *client,
            int fd, const char *rid, int type, const char *body,
            const char *opts)
{
    return s_reply_as (core, worker, s_alias (core, client, fd), rid, type,
                       body, opts);
}

//  The events of a kind since index from, in order.
static size_t
s_events (kind_t kind, size_t from, event_t **out, size_t max)
{
    size_t count = 0;
    for (size_t index = from; index < event_count; index++)
        if (events [index].kind == kind && count < max)
            out [count++] = &events [index];
    return count;
}

//  --------------------------------------------------------------------------
//  Tests

static void
test_requests_go_to_a_worker_oldest_first (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    //  Queued while nobody serves the name
    s_submit (core, "c1", "r1", "echo", "one", NULL);
    s_submit (core, "c1", "r2", "echo", "two", NULL);
    s_submit (core, "c2", "r3", "echo", "three", NULL);
    event_t *sent [8];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 8), 0);
    //  A worker appears: all three, in the order they came
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 8), 3);
    assert_string_equal (sent [0]->rid, "r1");
    assert_string_equal (sent [1]->rid, "r2");
    assert_string_equal (sent [2]->rid, "r3");
    assert_string_equal (sent [0]->body, "one");
    assert_string_equal (sent [0]->to, "w1");
    //  A partial, then the final reply, reach the client
    size_t mark = event_count;
    assert_true (s_reply (core, worker, "c1", "r1", PIGATO__PARTIAL, "p", ""));
    assert_true (s_reply (core, worker, "c1", "r1", PIGATO__REPLY, "f", ""));
    event_t *replies [4];
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 2);
    assert_int_equal (replies [0]->type, PIGATO__PARTIAL);
    assert_int_equal (replies [1]->type, PIGATO__REPLY);
    assert_string_equal (replies [1]->to, "c1");
    assert_string_equal (replies [1]->rid, "r1");
    assert_string_equal (replies [1]->body, "f");
    assert_int_equal (core->counters.replies, 1);
    assert_int_equal (core->counters.partials, 1);
    //  The request is gone: a second final is late, the worker stays
    size_t late = (size_t) core->counters.late_replies;
    assert_true (s_reply (core, worker, "c1", "r1", PIGATO__REPLY, "f", ""));
    assert_int_equal (core->counters.late_replies, late + 1);
    assert_int_equal (pigato__table_size (core->requests), 2);
    pigato__core_destroy (&core);
    assert_null (core);
}

static void
test_concurrency_limits_what_a_worker_holds (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    pigato__core_worker_concurrency (core, worker, 2);
    char rid [16];
    for (int index = 0; index < 5; index++) {
        snprintf (rid, sizeof rid, "r%d", index);
        s_submit (core, "c1", rid, "echo", "x", NULL);
    }
    event_t *sent [8];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 8), 2);
    assert_int_equal (worker->in_flight, 2);
    //  Each final reply makes room for exactly one more
    size_t mark = event_count;
    assert_true (s_reply (core, worker, "c1", "r0", PIGATO__REPLY, "", ""));
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 8), 1);
    assert_string_equal (sent [0]->rid, "r2");
    //  Raising the concurrency dispatches what waits
    mark = event_count;
    pigato__core_worker_concurrency (core, worker, -1);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 8), 2);
    assert_string_equal (sent [0]->rid, "r3");
    assert_string_equal (sent [1]->rid, "r4");
    pigato__core_destroy (&core);
}

static void
test_load_mode_picks_the_least_loaded_worker (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    core->dmode = PIGATO__DMODE_LOAD;
    pigato__worker_t *one = s_add_worker (core, "w1", "echo", 1);
    pigato__worker_t *two = s_add_worker (core, "w2", "echo", 2);
    char rid [16];
    for (int index = 0; index < 10; index++) {
        snprintf (rid, sizeof rid, "r%d", index);
        s_submit (core, "c1", rid, "echo", "x", NULL);
    }
    //  Alternately: neither ever holds two more than the other
    assert_int_equal (one->in_flight, 5);
    assert_int_equal (two->in_flight, 5);
    //  w1 finishes three: the next three go to it
    event_t *sent [16];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 16), 10);
    int finished = 0;
    for (int index = 0; index < 10 && finished < 3; index++)
        if (streq (sent [index]->to, "w1")) {
            assert_true (s_reply (core, one, "c1", sent [index]->rid,
                                  PIGATO__REPLY, "", ""));
            finished++;
        }
    size_t mark = event_count;
    for (int index = 10; index < 13; index++) {
        snprintf (rid, sizeof rid, "r%d", index);
        s_submit (core, "c1", rid, "echo", "x", NULL);
    }
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 16), 3);
    for (int index = 0; index < 3; index++)
        assert_string_equal (sent [index]->to, "w1");
    pigato__core_destroy (&core);
}

static void
test_rand_mode_uses_every_worker_with_room (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    core->dmode = PIGATO__DMODE_RAND;
    pigato__worker_t *workers [3] = { s_add_worker (core, "w1", "echo", 1),
                                      s_add_worker (core, "w2", "echo", 2),
                                      s_add_worker (core, "w3", "echo", 3) };
    for (int index = 0; index < 3; index++)
        pigato__core_worker_concurrency (core, workers [index], 100);
    char rid [16];
    for (int index = 0; index < 240; index++) {
        snprintf (rid, sizeof rid, "r%d", index);
        s_submit (core, "c1", rid, "echo", "x", NULL);
    }
    //  Random, not round robin, but none left out and none over its limit
    for (int index = 0; index < 3; index++) {
        assert_true (workers [index]->in_flight > 20);
        assert_true (workers [index]->in_flight <= 100);
    }
    assert_int_equal (workers [0]->in_flight + workers [1]->in_flight
                          + workers [2]->in_flight,
                      240);
    pigato__core_destroy (&core);
}

//  pigato's reject: the request goes to another worker, never back to
//  one that rejected it; with none, it waits for one that joins later,
//  until its timeout (no E_REJECTED at once).
static void
test_a_reject_goes_to_another_worker_or_waits (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *one = s_add_worker (core, "w1", "echo", 1);
    s_submit (core, "c1", "r1", "echo", "x", "{\"timeout\":5000}");
    event_t *sent [4];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 4), 1);
    assert_string_equal (sent [0]->to, "w1");
    //  The only worker rejects: no error, and it is not sent back
    size_t mark = event_count;
    assert_true (s_reply (core, one, "c1", "r1", PIGATO__REJECT, "", ""));
    event_t *errors [2];
    assert_int_equal (s_events (EV_ERROR, mark, errors, 2), 0);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 0);
    assert_int_equal (core->counters.rejects, 1);
    //  w1 still takes other requests meanwhile
    s_submit (core, "c1", "other", "echo", "x", NULL);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->rid, "other");
    assert_true (s_reply (core, one, "c1", "other", PIGATO__REPLY, "y", ""));

    //  A worker that joins later gets it (pigato's "Worker reject")
    mark = event_count;
    pigato__worker_t *two = s_add_worker (core, "w2", "echo", 2);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->to, "w2");
    assert_string_equal (sent [0]->rid, "r1");
    assert_string_equal (sent [0]->opts, "{\"timeout\":5000,\"attempt\":2}");
    assert_true (s_reply (core, two, "c1", "r1", PIGATO__REPLY, "ok", ""));

    //  With two workers, a reject sends it to the other, never back
    mark = event_count;
    s_submit (core, "c1", "r2", "echo", "x", NULL);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    const char *first = streq (sent [0]->to, "w1") ? "w1" : "w2";
    pigato__worker_t *holder = streq (first, "w1") ? one : two;
    pigato__worker_t *other = holder == one ? two : one;
    mark = event_count;
    assert_true (s_reply (core, holder, "c1", "r2", PIGATO__REJECT, "", ""));
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_not_equal (sent [0]->to, first);
    //  Both rejected it: it waits, and its timeout ends it without a
    //  reply (the client runs its own timer), freeing nothing it held
    mark = event_count;
    assert_true (s_reply (core, other, "c1", "r2", PIGATO__REJECT, "", ""));
    assert_int_equal (s_events (EV_ERROR, mark, errors, 2), 0);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 0);
    size_t timeouts = core->counters.timeouts;
    pigato__core_expire (core, core->now_ms + PIGATO_TIMEOUT_MS + 1);
    assert_int_equal (core->counters.timeouts, timeouts + 1);
    assert_int_equal (s_events (EV_ERROR, mark, errors, 2), 0);
    assert_int_equal (one->in_flight + two->in_flight, 0);
    pigato__core_destroy (&core);
}

static void
test_worker_loss_retries_or_fails (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *one = s_add_worker (core, "w1", "echo", 1);
    s_submit (core, "c1", "plain", "echo", "x", NULL);
    s_submit (core, "c1", "again", "echo", "x", "{\"retry\":1}");
    assert_int_equal (one->in_flight, 2);
    //  w1's connection closes: the plain request fails at once, the one
    //  that may retry waits, then goes to the next worker
    size_t mark = event_count;
    pigato__conn_t dead = s_conn (1);
    pigato__core_connection_lost (core, &dead);
    assert_null (pigato__core_worker_of (
        core, &(pigato__bytes_t) { (const byte *) "w1", 2 }));
    event_t *errors [4], *sent [4];
    assert_int_equal (s_events (EV_ERROR, mark, errors, 4), 1);
    assert_string_equal (errors [0]->rid, "plain");
    assert_true (strncmp (errors [0]->body, "E_WORKER_LOST", 13) == 0);
    assert_int_equal (core->counters.retries, 1);
    mark = event_count;
    pigato__worker_t *two = s_add_worker (core, "w2", "echo", 2);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->rid, "again");
    assert_string_equal (sent [0]->to, "w2");
    //  Its second worker learns it may have run before: attempt 2, the
    //  client's opts kept (and the same alias + rid)
    assert_string_equal (sent [0]->opts, "{\"retry\":1,\"attempt\":2}");
    assert_string_equal (sent [0]->client, s_alias (core, "c1", 100));
    //  A second loss: no retry left
    mark = event_count;
    pigato__core_worker_remove (core, two, "test", true);
    assert_int_equal (s_events (EV_ERROR, mark, errors, 4), 1);
    assert_string_equal (errors [0]->rid, "again");
    //  ... and the worker was told to go
    event_t *controls [4];
    assert_int_equal (s_events (EV_CONTROL, mark, controls, 4), 1);
    assert_int_equal (controls [0]->type, PIGATO__DISCONNECT);
    assert_int_equal (pigato__table_size (core->requests), 0);
    pigato__core_destroy (&core);
}

static void
test_a_closed_client_connection_drops_its_requests (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    pigato__core_worker_concurrency (core, worker, 1);
    assert_int_equal (
        s_submit_full (core, "c1", "r1", "echo", "x", NULL, 50, NULL), 0);
    assert_int_equal (
        s_submit_full (core, "c2", "r2", "echo", "x", NULL, 60, NULL), 0);
    //  c1 goes: its request leaves the worker, c2's takes the slot; no
    //  reply is sent to the routing id that went away
    size_t mark = event_count;
    pigato__conn_t dead = s_conn (50);
    pigato__core_connection_lost (core, &dead);
    event_t *sent [4], *replies [4];
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->rid, "r2");
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 0);
    assert_int_equal (s_events (EV_ERROR, mark, replies, 4), 0);
    //  The worker's late reply for it is dropped
    assert_true (s_reply_as (core, worker, s_alias (core, "c1", 50), "r1",
                             PIGATO__REPLY, "", ""));
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 0);
    assert_int_equal (core->counters.late_replies, 1);
    pigato__core_destroy (&core);
}

static void
test_requests_expire_and_free_their_slot (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    pigato__core_worker_concurrency (core, worker, 1);
    s_submit (core, "c1", "short", "echo", "x", "{\"timeout\":100}");
    s_submit (core, "c1", "never", "echo", "x", "{\"timeout\":-1}");
    //  Not yet due
    pigato__core_expire (core, core->now_ms + 99);
    assert_int_equal (core->counters.timeouts, 0);
    //  A partial reply is a sign of life: the deadline moves
    core->now_ms += 50;
    assert_true (
        s_reply (core, worker, "c1", "short", PIGATO__PARTIAL, "", ""));
    pigato__core_expire (core, core->now_ms + 99);
    assert_int_equal (core->counters.timeouts, 0);
    //  Due: it ends without a reply (clients keep their own timers), and
    //  the waiting request takes the slot
    size_t mark = event_count;
    pigato__core_expire (core, core->now_ms + 100);
    assert_int_equal (core->counters.timeouts, 1);
    event_t *sent [4], *replies [4];
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 0);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->rid, "never");
    //  timeout -1 never expires
    pigato__core_expire (core, INT64_MAX / 2);
    assert_int_equal (core->counters.timeouts, 1);
    pigato__core_destroy (&core);
}

static void
test_workers_that_stop_heartbeating_are_removed (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    core->heartbeat_ms = 100;
    core->liveness = 3;
    pigato__worker_t *quiet = s_add_worker (core, "quiet", "echo", 1);
    pigato__worker_t *alive = s_add_worker (core, "alive", "echo", 2);
    (void) quiet;
    core->now_ms += 200;
    pigato__core_worker_alive (core, alive);
    pigato__core_check_workers (core, core->now_ms + 150);
    assert_null (pigato__core_worker_of (
        core, &(pigato__bytes_t) { (const byte *) "quiet", 5 }));
    assert_non_null (pigato__core_worker_of (
        core, &(pigato__bytes_t) { (const byte *) "alive", 5 }));
    assert_int_equal (core->counters.workers_gone, 1);
    pigato__core_destroy (&core);
}

static void
test_a_request_may_name_its_worker (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *one = s_add_worker (core, "w1", "echo", 1);
    pigato__worker_t *two = s_add_worker (core, "w2", "echo", 2);
    pigato__core_worker_concurrency (core, two, 1);
    (void) one;
    //  Both go to w2, the second waits for it although w1 has room
    s_submit (core, "c1", "a", "echo", "x", "{\"workerId\":\"w2\"}");
    s_submit (core, "c1", "b", "echo", "x", "{\"workerId\":\"w2\"}");
    event_t *sent [4];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 4), 1);
    assert_string_equal (sent [0]->to, "w2");
    size_t mark = event_count;
    assert_true (s_reply (core, two, "c1", "a", PIGATO__REPLY, "", ""));
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->to, "w2");
    assert_string_equal (sent [0]->rid, "b");
    //  A worker that does not exist is refused at once
    char error [700];
    assert_int_not_equal (s_submit_full (core, "c1", "c", "echo", "x",
                                         "{\"workerId\":\"nobody\"}", 100,
                                         error),
                          0);
    assert_true (strncmp (error, "E_WORKER_NOT_FOUND", 18) == 0);
    //  One serving another name: refused at once too
    s_add_worker (core, "other", "time", 3);
    assert_int_not_equal (s_submit_full (core, "c1", "d", "echo", "x",
                                         "{\"workerId\":\"other\"}", 100,
                                         error),
                          0);
    assert_true (strncmp (error, "E_WORKER_NOT_FOUND", 18) == 0);
    pigato__core_destroy (&core);
}

static void
test_requests_waiting_for_a_named_worker_hold_up_nobody (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *busy = s_add_worker (core, "busy", "echo", 1);
    pigato__worker_t *free_ = s_add_worker (core, "free", "echo", 2);
    pigato__core_worker_concurrency (core, busy, 1);
    pigato__core_worker_concurrency (core, free_, 1000);
    s_submit (core, "c1", "t0", "echo", "x", "{\"workerId\":\"busy\"}");
    //  Many wait for the busy worker; requests for anyone still flow, in
    //  order, and none of the waiting ones goes elsewhere
    char rid [16];
    for (int index = 1; index <= 100; index++) {
        snprintf (rid, sizeof rid, "t%d", index);
        s_submit (core, "c1", rid, "echo", "x", "{\"workerId\":\"busy\"}");
    }
    size_t mark = event_count;
    for (int index = 0; index < 50; index++) {
        snprintf (rid, sizeof rid, "a%d", index);
        s_submit (core, "c2", rid, "echo", "x", NULL);
    }
    event_t *sent [128];
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 128), 50);
    for (int index = 0; index < 50; index++)
        assert_string_equal (sent [index]->to, "free");
    assert_int_equal (busy->in_flight, 1);
    //  Each reply from the busy worker lets the next waiting one in, oldest
    //  first
    mark = event_count;
    assert_true (s_reply (core, busy, "c1", "t0", PIGATO__REPLY, "", ""));
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 128), 1);
    assert_string_equal (sent [0]->rid, "t1");
    assert_string_equal (sent [0]->to, "busy");
    //  The worker it names rejects it: nobody else may take it
    mark = event_count;
    assert_true (s_reply (core, busy, "c1", "t1", PIGATO__REJECT, "", ""));
    event_t *errors [128];
    assert_int_equal (s_events (EV_ERROR, mark, errors, 128), 1);
    assert_true (strncmp (errors [0]->body, "E_REJECTED", 10) == 0);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 128), 1);
    assert_string_equal (sent [0]->rid, "t2");
    //  A waiting one that times out leaves the list
    pigato__conn_t conn = s_conn (100);
    pigato__request_t *t50 = pigato__core_request_of (
        core, &(pigato__bytes_t) { (const byte *) "c1", 2 }, &conn,
        &(pigato__bytes_t) { (const byte *) "t50", 3 });
    assert_non_null (t50);
    pigato__core_request_drop (core, t50);
    //  The worker goes: t2 it held fails as lost, the 97 waiting as not
    //  found
    mark = event_count;
    pigato__core_worker_remove (core, busy, "test", false);
    assert_int_equal (s_events (EV_ERROR, mark, errors, 128), 98);
    assert_string_equal (errors [0]->rid, "t3");
    assert_true (strncmp (errors [0]->body, "E_WORKER_NOT_FOUND", 18) == 0);
    assert_true (strncmp (errors [97]->body, "E_WORKER_LOST", 13) == 0);
    assert_string_equal (errors [97]->rid, "t2");
    assert_int_equal (pigato__table_size (core->requests), 50);
    pigato__core_destroy (&core);
}

static void
test_wildcards_and_versions_resolve (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    s_add_worker (core, "any", "pub*", 1);
    s_add_worker (core, "news", "pub.news*", 2);
    s_add_worker (core, "v1", "calc@1.4.0", 3);
    s_add_worker (core, "v2", "calc@2.1.0", 4);
    size_t mark = event_count;
    s_submit (core, "c1", "r1", "pub.weather", "x", NULL);
    s_submit (core, "c1", "r2", "pub.news.sport", "x", NULL);
    s_submit (core, "c1", "r3", "calc@^1", "x", NULL);
    s_submit (core, "c1", "r4", "calc@>=1", "x", NULL);
    event_t *sent [8];
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 8), 4);
    assert_string_equal (sent [0]->to, "any");  //  longest prefix
    assert_string_equal (sent [1]->to, "news");
    assert_string_equal (sent [2]->to, "v1");  //  satisfies ^1
    assert_string_equal (sent [3]->to, "v2");  //  highest first
    //  A name that waits for a wildcard is served once one appears
    mark = event_count;
    s_submit (core, "c1", "r5", "zed.x", "x", NULL);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 8), 0);
    s_add_worker (core, "zeds", "zed.*", 5);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 8), 1);
    assert_string_equal (sent [0]->rid, "r5");
    assert_string_equal (sent [0]->to, "zeds");
    pigato__core_destroy (&core);
}

static void
test_cached_replies_answer_without_a_worker (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "time", 1);
    s_submit (core, "c1", "r1", "time", "now", NULL);
    assert_true (s_reply (core, worker, "c1", "r1", PIGATO__REPLY, "12:00",
                          "{\"cache\":1000}"));
    //  The same body within the TTL: answered from the cache
    size_t mark = event_count;
    s_submit (core, "c2", "r2", "time", "now", NULL);
    event_t *sent [4], *replies [4];
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 0);
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 1);
    assert_string_equal (replies [0]->to, "c2");
    assert_string_equal (replies [0]->rid, "r2");
    assert_string_equal (replies [0]->body, "12:00");
    assert_int_equal (pigato__cache_hits (core->cache), 1);
    //  Another body, a request naming its worker, or after the TTL: the
    //  worker answers
    mark = event_count;
    s_submit (core, "c2", "r3", "time", "later", NULL);
    s_submit (core, "c2", "r4", "time", "now", "{\"workerId\":\"w1\"}");
    core->now_ms += 1001;
    s_submit (core, "c2", "r5", "time", "now", NULL);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 3);
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 0);
    pigato__core_destroy (&core);
}

static void
test_submit_refuses_what_it_cannot_take (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    char error [700];
    //  Opts that are not a JSON object
    assert_int_not_equal (
        s_submit_full (core, "c1", "r1", "echo", "x", "[1,2", 100, error), 0);
    assert_true (strncmp (error, "E_INVALID_OPTS", 14) == 0);
    //  A rid already in flight: malformed, no reply text
    s_submit (core, "c1", "r2", "echo", "x", NULL);
    assert_int_not_equal (
        s_submit_full (core, "c1", "r2", "echo", "x", NULL, 100, error), 0);
    assert_string_equal (error, "");
    assert_int_equal (pigato__table_size (core->requests), 1);
    pigato__core_destroy (&core);
}

//  A drain: new requests are refused (E_DRAINING, counted), the clients
//  of what is held are told once each (not MDP ones), what a libpigato
//  client can send elsewhere and no worker saw comes back; the rest
//  (at a worker, 0.0.46 and MDP clients', one naming its worker) stays
//  and is served, and what is left at the end is abandoned.
static void
test_a_drain_refuses_tells_hands_back_and_serves (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    pigato__core_worker_concurrency (core, worker, 1);
    char error [700];
    //  n1 (native) has one at the worker and two queued; o1 (0.0.46),
    //  m1 (MDP) one queued each; n2 (native) one naming the worker
    pigato__framing_t native = PIGATO__FRAMING_NATIVE;
    assert_int_equal (
        s_submit_framed (core, native, "n1", "a", "echo", NULL, 10, error), 0);
    assert_int_equal (
        s_submit_framed (core, native, "n1", "b", "echo", NULL, 10, error), 0);
    assert_int_equal (
        s_submit_framed (core, native, "n1", "c", "echo", NULL, 10, error), 0);
    assert_int_equal (s_submit_framed (core, PIGATO__FRAMING_046, "o1", "d",
                                       "echo", NULL, 11, error),
                      0);
    assert_int_equal (s_submit_framed (core, PIGATO__FRAMING_MDP, "m1", "",
                                       "echo", NULL, 12, error),
                      0);
    assert_int_equal (s_submit_framed (core, native, "n2", "e", "echo",
                                       "{\"workerId\":\"w1\"}", 13, error),
                      0);
    event_t *got [8];
    assert_int_equal (s_events (EV_REQUEST, 0, got, 8), 1);
    size_t mark = event_count;
    assert_int_equal (pigato__core_drain (core), 2);
    assert_true (core->draining);
    //  Told: n1 once for its three, o1, n2; not m1 (MDP has no notice)
    assert_int_equal (s_events (EV_NOTICE, mark, got, 8), 3);
    for (int index = 0; index < 3; index++)
        assert_string_not_equal (got [index]->to, "m1");
    //  Back: n1's queued b and c, after its notice
    assert_int_equal (s_events (EV_ERROR, mark, got, 8), 2);
    for (int index = 0; index < 2; index++) {
        assert_string_equal (got [index]->to, "n1");
        assert_string_equal (got [index]->body, PIGATO__E_DRAINING);
    }
    //  (in no particular order)
    assert_true ((streq (got [0]->rid, "b") && streq (got [1]->rid, "c"))
                 || (streq (got [0]->rid, "c") && streq (got [1]->rid, "b")));
    assert_int_equal (events [mark].kind, EV_NOTICE);
    assert_int_equal (pigato__table_size (core->requests), 4);
    assert_int_equal (core->counters.failed, 0);
    //  A new request, in any framing: refused, counted, nothing held
    assert_int_equal (s_submit_framed (core, native, "n3", "f", "echo", NULL,
                                       14, error),
                      PIGATO_E_CLOSED);
    assert_string_equal (error, PIGATO__E_DRAINING);
    assert_int_equal (s_submit_framed (core, PIGATO__FRAMING_MDP, "m2", "",
                                       "echo", NULL, 15, error),
                      PIGATO_E_CLOSED);
    assert_int_equal (core->drain_refused, 2);
    assert_int_equal (pigato__table_size (core->requests), 4);
    //  What stayed is served in turn: the worker's reply frees its room
    mark = event_count;
    assert_true (
        s_reply_on (core, worker, "n1", 10, "a", PIGATO__REPLY, "ok", ""));
    assert_int_equal (s_events (EV_REPLY, mark, got, 8), 1);
    assert_int_equal (s_events (EV_REQUEST, mark, got, 8), 1);
    assert_int_equal (pigato__table_size (core->requests), 3);
    //  At the timeout, the three left end with the text given
    mark = event_count;
    assert_int_equal (pigato__core_drain_abandon (core, "E_DRAIN_TIMEOUT x"),
                      3);
    assert_int_equal (s_events (EV_ERROR, mark, got, 8), 3);
    for (int index = 0; index < 3; index++)
        assert_string_equal (got [index]->body, "E_DRAIN_TIMEOUT x");
    assert_int_equal (pigato__table_size (core->requests), 0);
    //  ... and the worker is free, with nothing more handed to it
    assert_int_equal (worker->in_flight, 0);
    assert_int_equal (s_events (EV_REQUEST, mark, got, 8), 0);
    pigato__core_destroy (&core);
}

//  A worker that announces concurrency 0 (a draining libpigato worker)
//  gets no new request, finishes the one it holds, and leaves without
//  failing anything: what waited went to another worker.
static void
test_a_worker_without_room_gets_nothing_new (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *draining = s_add_worker (core, "w1", "echo", 1);
    s_submit (core, "c1", "r1", "echo", "x", "{\"retry\":2}");
    pigato__core_worker_concurrency (core, draining, 0);
    s_submit (core, "c1", "r2", "echo", "x", "{\"retry\":2}");
    event_t *got [8];
    assert_int_equal (s_events (EV_REQUEST, 0, got, 8), 1);
    assert_string_equal (got [0]->rid, "r1");
    //  Another worker takes what waits
    size_t mark = event_count;
    s_add_worker (core, "w2", "echo", 2);
    assert_int_equal (s_events (EV_REQUEST, mark, got, 8), 1);
    assert_string_equal (got [0]->to, "w2");
    assert_string_equal (got [0]->rid, "r2");
    //  The draining one finishes r1; r3 does not go to it
    mark = event_count;
    assert_true (s_reply (core, draining, "c1", "r1", PIGATO__REPLY, "ok", ""));
    s_submit (core, "c1", "r3", "echo", "x", NULL);
    assert_int_equal (s_events (EV_REQUEST, mark, got, 8), 1);
    assert_string_equal (got [0]->to, "w2");
    //  Its DISCONNECT fails and retries nothing
    pigato__core_worker_remove (core, draining, "disconnect", false);
    assert_int_equal (core->counters.failed, 0);
    assert_int_equal (core->counters.retries, 0);
    assert_int_equal (core->counters.replies, 1);
    pigato__core_destroy (&core);
}

static void
test_internal_services_answer_the_same_for_every_framing (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    s_add_worker (core, "w1", "echo", 1);
    s_add_worker (core, "w2", "pub*", 2);
    pigato__bytes_t name = s_bytes ("$dir"), body = s_bytes ("");
    int status;
    bool truncated;
    char *answer = pigato__core_internal (core, "alice", &name, &body, &status,
                                          &truncated);
    assert_int_equal (status, 0);
    //  Key order follows the service table: compare as JSON
    json_t *got = json_loads (answer, 0, NULL);
    json_t *want = json_loads ("{\"echo\":[\"w1\"],\"pub*\":[\"w2\"]}", 0,
                               NULL);
    assert_true (json_equal (got, want));
    json_decref (got);
    json_decref (want);
    free (answer);
    body = s_bytes ("\"echo\"");
    answer = pigato__core_internal (core, "alice", &name, &body, &status,
                                    &truncated);
    assert_string_equal (answer, "[\"w1\"]");
    free (answer);
    //  mmi.service: JSON string or plain text (MDP) alike; wildcards count
    name = s_bytes ("mmi.service");
    const char *asked [] = { "\"echo\"", "echo", "pub.x", "nope", "" };
    const char *expect [] = { "200", "200", "200", "404", "404" };
    for (int index = 0; index < 5; index++) {
        body = s_bytes (asked [index]);
        answer = pigato__core_internal (core, "alice", &name, &body, &status,
                                        &truncated);
        assert_int_equal (status, 0);
        assert_string_equal (answer, expect [index]);
        free (answer);
    }
    name = s_bytes ("mmi.other");
    answer = pigato__core_internal (core, "alice", &name, &body, &status,
                                    &truncated);
    assert_string_equal (answer, "501");
    free (answer);
    name = s_bytes ("$other");
    answer = pigato__core_internal (core, "alice", &name, &body, &status,
                                    &truncated);
    assert_int_equal (status, -1);
    assert_true (strncmp (answer, "E_RESERVED_SERVICE", 18) == 0);
    free (answer);
    //  Reserved names, and only those
    assert_true (pigato__core_reserved (
        &(pigato__bytes_t) { (const byte *) "$dir", 4 }));
    assert_true (pigato__core_reserved (
        &(pigato__bytes_t) { (const byte *) "mmi.x", 5 }));
    assert_false (pigato__core_reserved (
        &(pigato__bytes_t) { (const byte *) "mmix", 4 }));
    assert_false (pigato__core_reserved (
        &(pigato__bytes_t) { (const byte *) "echo$", 5 }));
    pigato__core_destroy (&core);
}

//  What a tenant asks the broker about: its answer (freed by the caller),
//  status and truncation.
static char *
s_ask (pigato__core_t *core, const char *identity, const char *service,
       const char *body, int *status, bool *truncated)
{
    pigato__bytes_t name = s_bytes (service), data = s_bytes (body);
    char *answer = pigato__core_internal (core, identity, &name, &data, status,
                                          truncated);
    assert_non_null (answer);
    return answer;
}

//  A tenant's policy: "alice" may call a.* except a.hidden@1.0.0, and the
//  broker's own names; workers may serve anything.
static bool
s_tenant_policy (void *arg, const char *identity, int verb, const char *name)
{
    (void) arg;
    if (verb == PIGATO__VERB_SERVE)
        return true;
    if (streq (identity, "alice"))
        return (strncmp (name, "a.", 2) == 0 && !streq (name, "a.hidden@1.0.0"))
            || streq (name, "$dir") || strncmp (name, "mmi.", 4) == 0;
    return true;
}

static void
test_dir_and_mmi_show_only_what_the_caller_may_call (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__core_set_policy (core, s_tenant_policy, NULL);
    s_add_worker (core, "wa", "a.echo", 1);
    s_add_worker (core, "wb", "b.secret", 2);
    s_add_worker (core, "wv", "a.hidden@1.0.0", 3);
    s_add_worker (core, "ww", "a.pub*", 4);
    int status;
    bool truncated;
    //  The whole map: only what alice may call
    char *answer = s_ask (core, "alice", "$dir", "", &status, &truncated);
    assert_int_equal (status, 0);
    assert_false (truncated);
    json_t *got = json_loads (answer, 0, NULL);
    json_t *want = json_loads ("{\"a.echo\":[\"wa\"],\"a.pub*\":[\"ww\"]}", 0,
                               NULL);
    assert_true (json_equal (got, want));
    json_decref (got);
    json_decref (want);
    free (answer);
    //  bob may call everything and sees everything; a body that is not a
    //  JSON string (Node pigato's `client.request ('$dir')` sends the text
    //  undefined) asks for the whole map too
    const char *whole [] = { "null", "undefined", "{}", "42", "true", "[]" };
    for (size_t index = 0; index < 6; index++) {
        answer = s_ask (core, "bob", "$dir", whole [index], &status,
                        &truncated);
        got = json_loads (answer, 0, NULL);
        assert_true (json_is_object (got));
        assert_int_equal (json_object_size (got), 4);
        json_decref (got);
        free (answer);
    }
    //  A service alice may not call is answered as one that does not exist
    const char *hidden [] = { "\"b.secret\"", "b.secret",
                              "\"a.hidden@1.0.0\"" };
    for (size_t index = 0; index < 3; index++) {
        answer = s_ask (core, "alice", "$dir", hidden [index], &status,
                        &truncated);
        assert_string_equal (answer, "[]");
        free (answer);
        answer = s_ask (core, "alice", "mmi.service", hidden [index], &status,
                        &truncated);
        assert_string_equal (answer, "404");
        free (answer);
    }
    answer = s_ask (core, "alice", "$dir", "\"b.nosuch\"", &status, &truncated);
    assert_string_equal (answer, "[]");
    free (answer);
    //  A range reaches only versions alice may call; a wildcard only names
    //  its worker may serve
    answer = s_ask (core, "alice", "mmi.service", "a.hidden@^1", &status,
                    &truncated);
    assert_string_equal (answer, "404");
    free (answer);
    answer = s_ask (core, "bob", "mmi.service", "a.hidden@^1", &status,
                    &truncated);
    assert_string_equal (answer, "200");
    free (answer);
    const char *visible [] = { "a.echo", "a.pub.news" };
    for (size_t index = 0; index < 2; index++) {
        answer = s_ask (core, "alice", "mmi.service", visible [index], &status,
                        &truncated);
        assert_string_equal (answer, "200");
        free (answer);
    }
    answer = s_ask (core, "alice", "$dir", "\"a.echo\"", &status, &truncated);
    assert_string_equal (answer, "[\"wa\"]");
    free (answer);
    pigato__core_destroy (&core);
}

static void
test_dir_answers_are_bounded (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    //  500 services of 3 workers with long ids: more than the bound
    char id [64], service [32];
    for (int index = 0; index < 1500; index++) {
        snprintf (id, sizeof id, "worker-%04d-%040d", index, 0);
        snprintf (service, sizeof service, "svc.%03d", index / 3);
        s_add_worker (core, id, service, 1);
    }
    //  One service with more workers than one answer lists
    for (int index = 0; index < 300; index++) {
        snprintf (id, sizeof id, "crowd-%04d", index);
        s_add_worker (core, id, "crowd", 2);
    }
    int status;
    bool truncated;
    char *answer = s_ask (core, "alice", "$dir", "", &status, &truncated);
    assert_int_equal (status, 0);
    assert_true (truncated);
    assert_true (strlen (answer) <= PIGATO__DIR_ANSWER_MAX);
    assert_true (strlen (answer) > PIGATO__DIR_ANSWER_MAX / 2);
    json_t *map = json_loads (answer, 0, NULL);
    assert_non_null (map);
    assert_true (json_object_size (map) > 10);
    assert_true (json_object_size (map) < 501);
    //  Whole entries: every service listed has its ids
    const char *key;
    json_t *ids;
    json_object_foreach (map, key, ids)
    {
        size_t expected = streq (key, "crowd") ? PIGATO__DIR_WORKERS_MAX : 3;
        assert_int_equal (json_array_size (ids), expected);
    }
    json_decref (map);
    free (answer);
    //  One service: at most PIGATO__DIR_WORKERS_MAX ids, and it says so
    answer = s_ask (core, "alice", "$dir", "\"crowd\"", &status, &truncated);
    assert_true (truncated);
    json_t *crowd = json_loads (answer, 0, NULL);
    assert_int_equal (json_array_size (crowd), PIGATO__DIR_WORKERS_MAX);
    json_decref (crowd);
    free (answer);
    answer = s_ask (core, "alice", "$dir", "\"svc.001\"", &status, &truncated);
    assert_false (truncated);
    free (answer);
    pigato__core_destroy (&core);
}

static void
test_internal_requests_are_limited_per_identity (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    s_add_worker (core, "w1", "echo", 1);
    int status;
    bool truncated;
    char *answer;
    //  A burst, then E_QUOTA at once, for $dir and mmi.* alike
    for (int index = 0; index < PIGATO__INTERNAL_BURST; index++) {
        answer = s_ask (core, "mallory", index % 2 ? "$dir" : "mmi.service",
                        "echo", &status, &truncated);
        assert_int_equal (status, 0);
        free (answer);
    }
    const char *names [] = { "$dir", "mmi.service", "mmi.other", "$other" };
    for (size_t index = 0; index < 4; index++) {
        answer = s_ask (core, "mallory", names [index], "", &status,
                        &truncated);
        assert_int_equal (status, -1);
        assert_true (strncmp (answer, "E_QUOTA", 7) == 0);
        free (answer);
    }
    assert_int_equal (core->counters.over_quota, 4);
    //  Another identity is not held up
    answer = s_ask (core, "bob", "$dir", "", &status, &truncated);
    assert_int_equal (status, 0);
    free (answer);
    //  The bucket refills at PIGATO__INTERNAL_RATE a second
    core->now_ms += 1000;
    for (int index = 0; index < PIGATO__INTERNAL_RATE; index++) {
        answer = s_ask (core, "mallory", "$dir", "", &status, &truncated);
        assert_int_equal (status, 0);
        free (answer);
    }
    answer = s_ask (core, "mallory", "$dir", "", &status, &truncated);
    assert_int_equal (status, -1);
    free (answer);
    pigato__core_destroy (&core);
}

static void
test_request_heartbeats_reach_the_holder_only (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    pigato__core_worker_concurrency (core, worker, 1);
    s_submit (core, "c1", "held", "echo", "x", NULL);
    s_submit (core, "c1", "queued", "echo", "x", NULL);
    size_t mark = event_count;
    pigato__bytes_t client = s_bytes ("c1"), held = s_bytes ("held"),
                    queued = s_bytes ("queued");
    pigato__conn_t conn = s_conn (100);
    pigato__core_request_heartbeat (
        core, pigato__core_request_of (core, &client, &conn, &held));
    pigato__core_request_heartbeat (
        core, pigato__core_request_of (core, &client, &conn, &queued));
    event_t *beats [4];
    assert_int_equal (s_events (EV_HEARTBEAT, mark, beats, 4), 1);
    assert_string_equal (beats [0]->rid, "held");
    assert_string_equal (beats [0]->to, "w1");
    pigato__core_destroy (&core);
}

//  A policy for the resolution tests: identity "wild" may not serve
//  pub.secret; "alice" may not call calc@2.1.0. Everything else goes.
static bool
s_test_policy (void *arg, const char *identity, int verb, const char *name)
{
    int *asked = (int *) arg;
    (*asked)++;
    if (streq (identity, "wild") && verb == PIGATO__VERB_SERVE
        && streq (name, "pub.secret"))
        return false;
    if (streq (identity, "alice") && verb == PIGATO__VERB_CALL
        && streq (name, "calc@2.1.0"))
        return false;
    return true;
}

static void
test_resolution_asks_the_policy_about_the_names_it_adds (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    int asked = 0;
    pigato__core_set_policy (core, s_test_policy, &asked);
    s_add_worker_as (core, "any", "pub*", 1, "wild");
    s_add_worker (core, "v1", "calc@1.4.0", 2);
    s_add_worker (core, "v2", "calc@2.1.0", 3);
    //  The wildcard's worker may serve pub.news, not pub.secret: that one
    //  waits for a worker that may
    size_t mark = event_count;
    s_submit (core, "c1", "r1", "pub.news", "x", NULL);
    s_submit (core, "c1", "r2", "pub.secret", "x", NULL);
    event_t *sent [4];
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->rid, "r1");
    //  Waiting requests do not make each dispatch walk the whole queue:
    //  the wildcard worker's room is no room for this name
    asked = 0;
    char rid [16];
    for (int index = 0; index < 200; index++) {
        snprintf (rid, sizeof rid, "q%d", index);
        s_submit (core, "c1", rid, "pub.secret", "x", NULL);
    }
    assert_true (asked < 200 * 4);
    //  Nor by naming it
    s_submit (core, "c1", "r3", "pub.secret", "x", "{\"workerId\":\"any\"}");
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    mark = event_count;
    s_add_worker_as (core, "real", "pub.secret", 4, "secret");
    assert_true (s_events (EV_REQUEST, mark, sent, 4) >= 1);  //  r2 first
    assert_string_equal (sent [0]->rid, "r2");
    assert_string_equal (sent [0]->to, "real");
    //  alice may call calc but not its 2.1.0: >=1 resolves to 1.4.0
    mark = event_count;
    s_submit (core, "c1", "r4", "calc@>=1", "x", NULL);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_string_equal (sent [0]->to, "v1");
    //  Asking the exact name is not resolution: the front-end checked it
    asked = 0;
    mark = event_count;
    s_submit (core, "c1", "r5", "calc@1.4.0", "x", NULL);
    assert_int_equal (s_events (EV_REQUEST, mark, sent, 4), 1);
    assert_int_equal (asked, 0);
    pigato__core_destroy (&core);
}

static void
test_nothing_goes_to_a_closing_connection (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *closing = s_add_worker (core, "closing", "echo", 1);
    pigato__worker_t *open = s_add_worker (core, "open", "echo", 2);
    pigato__core_worker_concurrency (core, closing, 100);
    pigato__core_worker_concurrency (core, open, 1);
    s_submit (core, "c1", "held", "echo", "x", NULL);  //  to one of them
    //  The monitor reports "closing" closed; its last words may still be
    //  read, but nothing new goes to its routing id
    assert_true (pigato__conns_dying (core->conns, 1));
    size_t mark = event_count;
    char rid [16];
    for (int index = 0; index < 10; index++) {
        snprintf (rid, sizeof rid, "r%d", index);
        s_submit (core, "c1", rid, "echo", "x", NULL);
    }
    event_t *sent [16];
    size_t count = s_events (EV_REQUEST, mark, sent, 16);
    for (size_t index = 0; index < count; index++)
        assert_string_equal (sent [index]->to, "open");
    assert_true (count <= 1);
    //  Its last words still count: a final reply for what it held
    if (closing->in_flight)
        assert_true (
            s_reply (core, closing, "c1", "held", PIGATO__REPLY, "", ""));
    //  Then it ends: the dying worker is gone, nothing was sent to it
    pigato__conn_t dead = pigato__conns_disconnected (core->conns, 1);
    pigato__core_connection_lost (core, &dead);
    assert_null (pigato__core_worker_of (
        core, &(pigato__bytes_t) { (const byte *) "closing", 7 }));
    for (size_t index = mark; index < event_count; index++)
        if (events [index].kind == EV_REQUEST)
            assert_string_not_equal (events [index].to, "closing");
    pigato__core_destroy (&core);
}

//  A worker never sees a client's routing id: the client field of a
//  request and of a request heartbeat is an alias, 32 lowercase hex
//  characters, the same for every request of one client connection, and
//  a reply that echoes it reaches the client
static void
test_workers_see_an_alias_not_the_client (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    //  A routing id that looks like an alias (libpigato's are hex too)
    const char *client = "0123456789abcdef0123456789abcdef";
    s_submit (core, client, "r1", "echo", "one", NULL);
    s_submit (core, client, "r2", "echo", "two", NULL);
    event_t *sent [4];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 4), 2);
    char alias [64];
    snprintf (alias, sizeof alias, "%s", sent [0]->client);
    assert_int_equal (strlen (sent [0]->client), PIGATO__ALIAS_SIZE);
    assert_int_equal (strspn (alias, "0123456789abcdef"), PIGATO__ALIAS_SIZE);
    assert_string_not_equal (alias, client);
    assert_string_equal (sent [1]->client, alias);
    //  A request heartbeat names it the same way
    size_t mark = event_count;
    pigato__bytes_t client_bytes = s_bytes (client), rid = s_bytes ("r1");
    pigato__conn_t conn = s_conn (100);
    pigato__core_request_heartbeat (
        core, pigato__core_request_of (core, &client_bytes, &conn, &rid));
    event_t *beats [4];
    assert_int_equal (s_events (EV_HEARTBEAT, mark, beats, 4), 1);
    assert_string_equal (beats [0]->client, alias);
    //  The worker echoes it: the reply goes to the client's routing id on
    //  its connection
    mark = event_count;
    assert_true (
        s_reply_as (core, worker, alias, "r1", PIGATO__REPLY, "done", ""));
    event_t *replies [4];
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 1);
    assert_string_equal (replies [0]->to, client);
    assert_int_equal (replies [0]->fd, 100);
    assert_string_equal (replies [0]->rid, "r1");
    assert_string_equal (replies [0]->body, "done");
    assert_int_equal (core->counters.late_replies, 0);
    pigato__core_destroy (&core);
}

//  The alias is of the routing id on its connection: the same routing id
//  on another connection (or a later one on the same fd) is another
//  client, with another alias and requests of its own, even under the
//  same rid
static void
test_one_routing_id_on_two_connections_has_two_aliases (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    assert_int_equal (
        s_submit_full (core, "c1", "r1", "echo", "a", NULL, 50, NULL), 0);
    assert_int_equal (
        s_submit_full (core, "c1", "r1", "echo", "b", NULL, 60, NULL), 0);
    event_t *sent [4];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 4), 2);
    assert_string_not_equal (sent [0]->client, sent [1]->client);
    //  Each reply reaches its own connection
    size_t mark = event_count;
    assert_true (s_reply_as (core, worker, sent [1]->client, "r1",
                             PIGATO__REPLY, "", ""));
    assert_true (s_reply_as (core, worker, sent [0]->client, "r1",
                             PIGATO__REPLY, "", ""));
    event_t *replies [4];
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 2);
    assert_int_equal (replies [0]->fd, 60);
    assert_int_equal (replies [1]->fd, 50);
    //  A new connection on fd 50 (generation 2) is another alias too
    pigato__bytes_t client = s_bytes ("c1");
    pigato__conn_t first = s_conn (50), later = { 50, 2 };
    char alias [PIGATO__ALIAS_SIZE];
    memcpy (alias, pigato__aliases_get (core->aliases, &client, &first),
            PIGATO__ALIAS_SIZE);
    assert_memory_not_equal (
        alias, pigato__aliases_get (core->aliases, &client, &later),
        PIGATO__ALIAS_SIZE);
    //  and the first connection's alias comes back unchanged
    assert_memory_equal (alias,
                         pigato__aliases_get (core->aliases, &client, &first),
                         PIGATO__ALIAS_SIZE);
    pigato__core_destroy (&core);
}

//  A reply is found by the alias its worker was sent: the client's
//  routing id, another client's alias, or the same client's on another
//  connection find nothing (a late reply); an MDP worker that names
//  another client is out of protocol
static void
test_a_reply_with_a_wrong_alias_is_late (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    s_submit (core, "c1", "r1", "echo", "x", NULL);
    s_submit (core, "c2", "r2", "echo", "x", NULL);
    event_t *sent [4];
    assert_int_equal (s_events (EV_REQUEST, 0, sent, 4), 2);
    size_t mark = event_count;
    char wrong [4][64];
    snprintf (wrong [0], sizeof wrong [0], "c1");
    snprintf (wrong [1], sizeof wrong [1], "%s", s_alias (core, "c2", 100));
    snprintf (wrong [2], sizeof wrong [2], "%s", s_alias (core, "c1", 101));
    snprintf (wrong [3], sizeof wrong [3], "%s", sent [0]->client);
    for (char *at = wrong [3]; *at; at++)
        if (*at >= 'a' && *at <= 'f')
            *at = (char) (*at - 'a' + 'A');
    assert_string_not_equal (wrong [3], sent [0]->client);
    for (size_t index = 0; index < 4; index++)
        assert_true (s_reply_as (core, worker, wrong [index], "r1",
                                 PIGATO__REPLY, "", ""));
    event_t *replies [4];
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 0);
    assert_int_equal (core->counters.late_replies, 4);
    //  The alias it was sent works
    assert_true (s_reply_as (core, worker, sent [0]->client, "r1",
                             PIGATO__REPLY, "", ""));
    assert_int_equal (s_events (EV_REPLY, mark, replies, 4), 1);
    assert_string_equal (replies [0]->to, "c1");
    //  An MDP worker holds one request; a FINAL naming anything but that
    //  request's alias is refused (the front-end then disconnects it)
    pigato__bytes_t id = s_bytes ("m1"), name = s_bytes ("mdp");
    pigato__conn_t conn = s_conn (2);
    assert_int_equal (pigato__core_worker_add (core, &id, &name,
                                               PIGATO__FRAMING_MDP, &conn,
                                               "worker", NULL),
                      0);
    pigato__worker_t *mdp = pigato__core_worker_of (core, &id);
    s_submit (core, "c3", "r3", "mdp", "x", NULL);
    assert_int_equal (mdp->in_flight, 1);
    assert_false (s_reply (core, mdp, "c1", "", PIGATO__REPLY, "", ""));
    assert_false (s_reply_as (core, mdp, "c3", "", PIGATO__REPLY, "", ""));
    assert_true (s_reply (core, mdp, "c3", "", PIGATO__REPLY, "", ""));
    assert_int_equal (mdp->in_flight, 0);
    pigato__core_destroy (&core);
}

//  Limits for the quota tests: mallory may hold 3 requests, bob 10 bytes,
//  carol send 2 a second; *arg (if not 0) is everyone's pending limit
//  after a "reload".
static void
s_test_limits (void *arg, const char *identity, pigato__limits_t *limits)
{
    int pending = arg ? *(int *) arg : 0;
    if (pending)
        limits->pending = pending;
    if (streq (identity, "mallory"))
        limits->pending = 3;
    if (streq (identity, "bob"))
        limits->pending_bytes = 10;
    if (streq (identity, "carol"))
        limits->rate = 2;
    if (streq (identity, "dave"))
        limits->connections = 2;
}

//  Connections count against their identity from its first message on,
//  until they close.
static void
test_identities_have_at_most_their_connections (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__core_set_limits (core, s_test_limits, NULL);
    pigato__conn_t one = s_conn (20), two = s_conn (21), three = s_conn (22);
    assert_int_equal (pigato__core_connection_owner (core, &one, "dave"),
                      PIGATO__CONN_OWNED);
    assert_int_equal (pigato__core_connection_owner (core, &one, "dave"),
                      PIGATO__CONN_OWNED);
    assert_int_equal (pigato__core_connection_owner (core, &two, "dave"),
                      PIGATO__CONN_OWNED);
    assert_int_equal (pigato__core_connection_owner (core, &three, "dave"),
                      PIGATO__CONN_REFUSED);
    //  What it sends next is dropped, not counted again
    assert_int_equal (pigato__core_connection_owner (core, &three, "dave"),
                      PIGATO__CONN_REFUSED_BEFORE);
    assert_int_equal (core->counters.over_quota, 1);
    //  Others have theirs (unlimited by default)
    for (int fd = 30; fd < 40; fd++) {
        pigato__conn_t conn = s_conn (fd);
        assert_int_equal (pigato__core_connection_owner (core, &conn, "alice"),
                          PIGATO__CONN_OWNED);
    }
    //  A closed one makes room; a later connection on a reused fd is a
    //  new one, and so is its owner
    pigato__core_connection_lost (core, &one);
    pigato__core_connection_lost (core, &three);
    pigato__conn_t four = { 22, 2 };
    assert_int_equal (pigato__core_connection_owner (core, &four, "dave"),
                      PIGATO__CONN_OWNED);
    pigato__conn_t again = { 21, 2 };
    assert_int_equal (pigato__core_connection_owner (core, &again, "alice"),
                      PIGATO__CONN_OWNED);
    assert_int_equal (pigato__core_tenant (core, "dave")->connections, 1);
    assert_int_equal (pigato__core_connection_owner (core, &one, "dave"),
                      PIGATO__CONN_REFUSED_BEFORE);
    pigato__conn_t five = { 20, 2 };
    assert_int_equal (pigato__core_connection_owner (core, &five, "dave"),
                      PIGATO__CONN_OWNED);
    pigato__conn_t unknown = { -1, 0 };
    assert_int_equal (pigato__core_connection_owner (core, &unknown, "dave"),
                      PIGATO__CONN_OWNED);
    assert_int_equal (pigato__core_tenant (core, "dave")->connections, 2);
    pigato__core_destroy (&core);
}

static void
test_identities_hold_no_more_than_their_limits (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    int pending = 0;
    pigato__core_set_limits (core, s_test_limits, &pending);
    char error [700], rid [16];
    //  mallory: 3 requests held (no worker: they wait), then E_QUOTA
    for (int index = 0; index < 3; index++) {
        snprintf (rid, sizeof rid, "m%d", index);
        assert_int_equal (s_submit_as (core, "mallory", "cm", rid, "echo", "x",
                                       NULL, 10, error),
                          0);
    }
    assert_int_equal (s_submit_as (core, "mallory", "cm", "m3", "echo", "x",
                                   NULL, 10, error),
                      PIGATO_E_NOMEM);
    assert_true (strncmp (error, "E_QUOTA ", 8) == 0);
    assert_non_null (strstr (error, "(pending)"));
    assert_int_equal (core->counters.over_quota, 1);
    //  Others are not held up
    assert_int_equal (s_submit_as (core, "alice", "ca", "a0", "echo", "x", NULL,
                                   11, error),
                      0);
    //  bob: 10 bytes of bodies and opts
    assert_int_equal (s_submit_as (core, "bob", "cb", "b0", "echo", "12345678",
                                   NULL, 12, error),
                      0);
    assert_int_equal (s_submit_as (core, "bob", "cb", "b1", "echo", "123", NULL,
                                   12, error),
                      PIGATO_E_NOMEM);
    assert_non_null (strstr (error, "(pending-bytes)"));
    //  What ends gives its room back: a worker serves everything
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    assert_true (
        s_reply_on (core, worker, "cm", 10, "m0", PIGATO__REPLY, "", ""));
    assert_true (
        s_reply_on (core, worker, "cb", 12, "b0", PIGATO__REPLY, "", ""));
    assert_int_equal (s_submit_as (core, "mallory", "cm", "m3", "echo", "x",
                                   NULL, 10, error),
                      0);
    assert_int_equal (s_submit_as (core, "bob", "cb", "b1", "echo", "123", NULL,
                                   12, error),
                      0);
    //  A lost connection gives back what its requests held
    pigato__conn_t dead = s_conn (10);
    pigato__core_connection_lost (core, &dead);
    pigato__tenant_t *mallory = pigato__core_tenant (core, "mallory");
    assert_int_equal (mallory->pending, 0);
    assert_int_equal (mallory->pending_bytes, 0);
    //  carol: 2 a second, in bursts of 2
    assert_int_equal (s_submit_as (core, "carol", "cc", "c0", "echo", "", NULL,
                                   13, error),
                      0);
    assert_int_equal (s_submit_as (core, "carol", "cc", "c1", "echo", "", NULL,
                                   13, error),
                      0);
    assert_int_equal (s_submit_as (core, "carol", "cc", "c2", "echo", "", NULL,
                                   13, error),
                      PIGATO_E_NOMEM);
    assert_non_null (strstr (error, "(rate)"));
    core->now_ms += 500;
    assert_int_equal (s_submit_as (core, "carol", "cc", "c2", "echo", "", NULL,
                                   13, error),
                      0);
    assert_int_equal (s_submit_as (core, "carol", "cc", "c3", "echo", "", NULL,
                                   13, error),
                      PIGATO_E_NOMEM);
    //  A new policy's limits apply from the next request on
    pending = 1;
    pigato__core_set_limits (core, s_test_limits, &pending);
    assert_true (
        s_reply_on (core, worker, "ca", 11, "a0", PIGATO__REPLY, "", ""));
    assert_int_equal (s_submit_as (core, "alice", "ca", "a1", "echo", "x", NULL,
                                   11, error),
                      0);
    assert_int_equal (s_submit_as (core, "alice", "ca", "a2", "echo", "x", NULL,
                                   11, error),
                      PIGATO_E_NOMEM);
    assert_int_equal (core->counters.over_quota, 5);
    pigato__core_destroy (&core);
}

static void
test_callers_take_turns_in_a_queue (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *worker = s_add_worker (core, "w1", "echo", 1);
    pigato__core_worker_concurrency (core, worker, 1);
    char rid [16];
    //  mallory floods: one at the worker, 99 queued
    for (int index = 0; index < 100; index++) {
        snprintf (rid, sizeof rid, "m%d", index);
        assert_int_equal (s_submit_as (core, "mallory", "cm", rid, "echo", "x",
                                       NULL, 10, NULL),
                          0);
    }
    //  alice and bob come later, with two each
    assert_int_equal (s_submit_as (core, "alice", "ca", "a0", "echo", "x", NULL,
                                   11, NULL),
                      0);
    assert_int_equal (
        s_submit_as (core, "bob", "cb", "b0", "echo", "x", NULL, 12, NULL), 0);
    assert_int_equal (s_submit_as (core, "alice", "ca", "a1", "echo", "x", NULL,
                                   11, NULL),
                      0);
    assert_int_equal (
        s_submit_as (core, "bob", "cb", "b1", "echo", "x", NULL, 12, NULL), 0);
    //  Each waits at most one request per other caller
    const char *order [] = { "m1", "a0", "b0", "m2", "a1", "b1", "m3", "m4" };
    const char *client = "cm", *held = "m0";
    int client_fd = 10;
    for (size_t index = 0; index < 8; index++) {
        size_t mark = event_count;
        assert_true (s_reply_on (core, worker, client, client_fd, held,
                                 PIGATO__REPLY, "", ""));
        event_t *sent [2];
        assert_int_equal (s_events (EV_REQUEST, mark, sent, 2), 1);
        assert_string_equal (sent [0]->rid, order [index]);
        held = order [index];
        client = held [0] == 'm' ? "cm" : held [0] == 'a' ? "ca" : "cb";
        client_fd = held [0] == 'm' ? 10 : held [0] == 'a' ? 11 : 12;
    }
    //  Lanes go with their last request: a flood's as its client leaves
    assert_int_equal (pigato__services_lanes (core->services), 1);
    pigato__conn_t dead = s_conn (10);
    pigato__core_connection_lost (core, &dead);
    assert_int_equal (pigato__services_lanes (core->services), 0);
    pigato__core_destroy (&core);
}

//  Requests spread over many names under one wildcard: a worker's room
//  costs a look at a few names, not at every waiting one, and the names
//  take turns.
static void
test_a_wildcard_serves_many_waiting_names_in_turn (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    int asked = 0;
    pigato__core_set_policy (core, s_test_policy, &asked);
    pigato__worker_t *worker = s_add_worker_as (core, "any", "p*", 1, "wild");
    pigato__core_worker_concurrency (core, worker, 1);
    char rid [16], name [16];
    s_submit (core, "c1", "first", "p.0", "x", NULL);
    s_submit (core, "c1", "second", "p.0", "x", NULL);
    s_submit (core, "c1", "third", "p.0", "x", NULL);
    for (int index = 1; index < 30000; index++) {
        snprintf (rid, sizeof rid, "r%d", index);
        snprintf (name, sizeof name, "p.%d", index);
        s_submit (core, "c1", rid, name, "x", NULL);
    }
    //  100 replies, each makes room for one more: the names in the order
    //  they started waiting (p.0 first), and a name that had a turn waits
    //  for every other name's (p.0's third after all of them)
    asked = 0;
    char held [16] = "first";
    for (int index = 0; index < 100; index++) {
        size_t mark = event_count;
        assert_true (s_reply (core, worker, "c1", held, PIGATO__REPLY, "", ""));
        event_t *sent [2];
        assert_int_equal (s_events (EV_REQUEST, mark, sent, 2), 1);
        if (index == 0)
            strcpy (rid, "second");
        else
            snprintf (rid, sizeof rid, "r%d", index);
        assert_string_equal (sent [0]->rid, rid);
        strcpy (held, rid);
    }
    //  Each room asked the policy about a few names (may "wild" serve
    //  it?), not about 30,000
    assert_true (asked < 100 * 8);
    pigato__core_destroy (&core);
}

//  A worker that rejects, leaves and comes back (a new registration each
//  time) cannot grow a request's list of rejecting workers for ever.
static void
test_a_request_is_rejected_by_a_bounded_number_of_workers (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    pigato__worker_t *idle = s_add_worker (core, "idle", "echo", 1);
    pigato__core_worker_concurrency (core, idle, 0);  //  never has room
    s_submit (core, "c1", "r1", "echo", "x", NULL);
    for (int round = 0; round <= PIGATO__REJECTS_MAX; round++) {
        size_t mark = event_count;
        pigato__worker_t *bad = s_add_worker (core, "bad", "echo", 2);
        event_t *sent [2], *errors [2];
        assert_int_equal (s_events (EV_REQUEST, mark, sent, 2), 1);
        assert_true (s_reply (core, bad, "c1", "r1", PIGATO__REJECT, "", ""));
        if (round < PIGATO__REJECTS_MAX) {
            assert_int_equal (s_events (EV_ERROR, mark, errors, 2), 0);
            pigato__core_worker_remove (core, bad, "test", false);
        }
        else {
            assert_int_equal (s_events (EV_ERROR, mark, errors, 2), 1);
            assert_non_null (strstr (errors [0]->body, "rejected by 64"));
        }
    }
    pigato__core_destroy (&core);
}

//  MDP clients never heartbeat their requests: the broker does it for
//  them, each heartbeat interval, while a pigato worker holds one.
static void
test_mdp_clients_requests_are_heartbeaten_by_the_broker (void **state)
{
    (void) state;
    pigato__core_t *core = s_core ();
    s_add_worker (core, "w1", "echo", 1);
    pigato__submit_t submit = { .caller = { .framing = PIGATO__FRAMING_MDP,
                                            .client = s_bytes ("m1"),
                                            .conn = s_conn (50),
                                            .rid = s_bytes (""),
                                            .service = s_bytes ("echo") },
                                .name = "echo",
                                .body = s_bytes ("x"),
                                .identity = "alice" };
    char error [700];
    assert_int_equal (pigato__core_submit (core, &submit, error, sizeof error),
                      0);
    s_submit (core, "c1", "r1", "echo", "x", NULL);  //  a pigato client's
    size_t mark = event_count;
    pigato__core_check_workers (core, core->now_ms + 10);
    event_t *beats [4];
    assert_int_equal (s_events (EV_HEARTBEAT, mark, beats, 4), 1);
    assert_string_equal (beats [0]->to, "w1");
    pigato__core_destroy (&core);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_requests_go_to_a_worker_oldest_first),
        cmocka_unit_test (test_concurrency_limits_what_a_worker_holds),
        cmocka_unit_test (test_load_mode_picks_the_least_loaded_worker),
        cmocka_unit_test (test_rand_mode_uses_every_worker_with_room),
        cmocka_unit_test (test_a_reject_goes_to_another_worker_or_waits),
        cmocka_unit_test (test_worker_loss_retries_or_fails),
        cmocka_unit_test (test_a_closed_client_connection_drops_its_requests),
        cmocka_unit_test (test_requests_expire_and_free_their_slot),
        cmocka_unit_test (test_workers_that_stop_heartbeating_are_removed),
        cmocka_unit_test (test_a_request_may_name_its_worker),
        cmocka_unit_test (
            test_requests_waiting_for_a_named_worker_hold_up_nobody),
        cmocka_unit_test (test_wildcards_and_versions_resolve),
        cmocka_unit_test (test_cached_replies_answer_without_a_worker),
        cmocka_unit_test (test_submit_refuses_what_it_cannot_take),
        cmocka_unit_test (test_a_drain_refuses_tells_hands_back_and_serves),
        cmocka_unit_test (test_a_worker_without_room_gets_nothing_new),
        cmocka_unit_test (
            test_internal_services_answer_the_same_for_every_framing),
        cmocka_unit_test (test_dir_and_mmi_show_only_what_the_caller_may_call),
        cmocka_unit_test (test_dir_answers_are_bounded),
        cmocka_unit_test (test_internal_requests_are_limited_per_identity),
        cmocka_unit_test (test_request_heartbeats_reach_the_holder_only),
        cmocka_unit_test (test_nothing_goes_to_a_closing_connection),
        cmocka_unit_test (test_workers_see_an_alias_not_the_client),
        cmocka_unit_test (
            test_one_routing_id_on_two_connections_has_two_aliases),
        cmocka_unit_test (test_a_reply_with_a_wrong_alias_is_late),
        cmocka_unit_test (
            test_resolution_asks_the_policy_about_the_names_it_adds),
        cmocka_unit_test (test_identities_hold_no_more_than_their_limits),
        cmocka_unit_test (test_identities_have_at_most_their_connections),
        cmocka_unit_test (test_callers_take_turns_in_a_queue),
        cmocka_unit_test (
            test_mdp_clients_requests_are_heartbeaten_by_the_broker),
        cmocka_unit_test (test_a_wildcard_serves_many_waiting_names_in_turn),
        cmocka_unit_test (
            test_a_request_is_rejected_by_a_bounded_number_of_workers),
    };
    pigato__log_level = PIGATO_LOG_ERROR;
    return cmocka_run_group_tests (tests, NULL, NULL);
}
