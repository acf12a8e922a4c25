/*  test_service.c - the broker's routing decisions: FIFO queues, worker
    choice by load, concurrency limits, reject lists, request opts.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>
#include "../../mesh/broker/service.h"
#include "../../mesh/base/bkey.h"

static pigato__request_t *
s_request (const char *client, const char *rid, const char *opts)
{
    pigato__bytes_t client_bytes = { (const byte *) client, strlen (client) };
    pigato__bytes_t rid_bytes = { (const byte *) rid, strlen (rid) };
    pigato__bytes_t opts_bytes = { (const byte *) opts,
                                   opts ? strlen (opts) : 0 };
    //  The body shares the part it came in
    zmq_msg_t part;
    zmq_msg_init_size (&part, 64);
    memset (zmq_msg_data (&part), 'x', 64);
    memcpy ((byte *) zmq_msg_data (&part) + 10, "data", 4);
    pigato__bytes_t data = { (const byte *) zmq_msg_data (&part) + 10, 4 };
    //  Keyed by an alias of the client (the core's: alias.h)
    pigato__bytes_t alias = { (const byte *) "alias", 5 };
    pigato__request_t *request = pigato__request_new (
        NULL, &client_bytes, &alias, &rid_bytes, NULL, &part, &data,
        opts ? &opts_bytes : NULL);
    zmq_msg_close (&part);
    assert_non_null (request);
    pigato__bytes_t body = pigato__request_body (request);
    assert_int_equal (body.size, 4);
    assert_memory_equal (body.data, "data", 4);
    pigato__bytes_t got = pigato__request_client (request);
    assert_int_equal (got.size, strlen (client));
    assert_memory_equal (got.data, client, got.size);
    got = pigato__request_alias (request);
    assert_int_equal (got.size, 5);
    assert_memory_equal (got.data, "alias", 5);
    got = pigato__request_rid (request);
    assert_int_equal (got.size, strlen (rid));
    assert_memory_equal (got.data, rid, got.size);
    return request;
}

static pigato__worker_t *
s_worker (uint64_t serial, int concurrency)
{
    pigato__worker_t *worker = calloc (1, sizeof *worker);
    worker->serial = serial;
    worker->concurrency = concurrency;
    return worker;
}

static void
test_services_are_created_on_demand_and_released_when_empty (void **state)
{
    (void) state;
    pigato__services_t *services = pigato__services_new ();
    pigato__service_t *echo = pigato__services_require (services, "echo", 4);
    assert_non_null (echo);
    assert_ptr_equal (pigato__services_require (services, "echo", 4), echo);
    assert_ptr_equal (pigato__services_lookup (services, "echo", 4), echo);
    assert_null (pigato__services_lookup (services, "ech", 3));
    assert_null (pigato__services_require (services, "a\0b", 3));
    assert_null (pigato__services_require (services, "", 0));

    pigato__request_t *request = s_request ("c", "r", NULL);
    pigato__service_enqueue (echo, request, false);
    pigato__service_t *handle = echo;
    pigato__services_release (services, &handle);
    assert_non_null (handle);  //  still has a request
    pigato__service_dequeue (echo, request);
    pigato__services_release (services, &handle);
    assert_null (handle);
    assert_int_equal (pigato__services_size (services), 0);
    pigato__request_destroy (NULL, &request);

    //  The last name looked up is remembered: a name it begins, a longer
    //  name, the same bytes with a NUL and a service that went never hit it
    echo = pigato__services_require (services, "echo", 4);
    assert_ptr_equal (pigato__services_lookup (services, "echo", 4), echo);
    assert_null (pigato__services_lookup (services, "ech", 3));
    assert_null (pigato__services_lookup (services, "echo2", 5));
    assert_null (pigato__services_lookup (services, "echo\0", 5));
    pigato__service_t *longer = pigato__services_require (services, "echo2", 5);
    assert_non_null (longer);
    assert_true (longer != echo);
    assert_ptr_equal (pigato__services_lookup (services, "echo", 4), echo);
    handle = echo;
    pigato__services_release (services, &handle);
    assert_null (handle);
    assert_null (pigato__services_lookup (services, "echo", 4));
    pigato__service_t *again = pigato__services_require (services, "echo", 4);
    assert_non_null (again);
    assert_string_equal (again->name, "echo");
    assert_int_equal (pigato__services_size (services), 2);
    pigato__services_destroy (&services);
}

static void
test_queue_is_fifo_and_front_insert_jumps_it (void **state)
{
    (void) state;
    pigato__services_t *services = pigato__services_new ();
    pigato__service_t *service = pigato__services_require (services, "s", 1);
    pigato__request_t *first = s_request ("c", "1", NULL);
    pigato__request_t *second = s_request ("c", "2", NULL);
    pigato__request_t *urgent = s_request ("c", "3", NULL);
    pigato__service_enqueue (service, first, false);
    pigato__service_enqueue (service, second, false);
    pigato__service_enqueue (service, urgent, true);
    assert_ptr_equal (service->queue_head, urgent);
    assert_ptr_equal (urgent->next, first);
    assert_ptr_equal (first->next, second);
    assert_ptr_equal (service->queue_tail, second);
    pigato__service_dequeue (service, first);
    assert_ptr_equal (urgent->next, second);
    assert_ptr_equal (second->prev, urgent);
    assert_int_equal (service->queued, 2);
    pigato__service_dequeue (service, urgent);
    pigato__service_dequeue (service, second);
    assert_null (service->queue_head);
    assert_null (service->queue_tail);
    pigato__request_destroy (NULL, &first);
    pigato__request_destroy (NULL, &second);
    pigato__request_destroy (NULL, &urgent);
    pigato__services_destroy (&services);
}

static void
test_load_mode_picks_least_in_flight_and_honours_concurrency (void **state)
{
    (void) state;
    pigato__services_t *services = pigato__services_new ();
    pigato__service_t *service = pigato__services_require (services, "s", 1);
    pigato__worker_t *busy = s_worker (1, 2);
    pigato__worker_t *idle = s_worker (2, 2);
    pigato__service_add_worker (service, busy);
    pigato__service_add_worker (service, idle);
    pigato__request_t *requests [5];
    for (int index = 0; index < 5; index++)
        requests [index] = s_request (
            "c", (char []) { (char) ('a' + index), 0 }, NULL);
    pigato__worker_take (busy, requests [0]);
    assert_ptr_equal (pigato__service_pick (service, requests [1],
                                            PIGATO__DMODE_LOAD, NULL, NULL),
                      idle);
    pigato__worker_take (idle, requests [1]);
    //  Tie on in_flight: fewer dispatched wins (both 1): either is fine,
    //  but after two on idle, busy must win
    pigato__worker_take (idle, requests [2]);
    assert_ptr_equal (pigato__service_pick (service, requests [3],
                                            PIGATO__DMODE_LOAD, NULL, NULL),
                      busy);
    pigato__worker_take (busy, requests [3]);
    //  Both at concurrency 2: nobody has room
    assert_null (pigato__service_pick (service, requests [4],
                                       PIGATO__DMODE_LOAD, NULL, NULL));
    assert_null (pigato__service_pick (service, requests [4],
                                       PIGATO__DMODE_RAND, NULL, NULL));
    //  Unlimited concurrency always has room
    idle->concurrency = -1;
    assert_ptr_equal (pigato__service_pick (service, requests [4],
                                            PIGATO__DMODE_RAND, NULL, NULL),
                      idle);
    pigato__worker_release (busy, requests [0]);
    assert_int_equal (busy->in_flight, 1);
    assert_ptr_equal (busy->requests, requests [3]);
    assert_null (requests [0]->worker);
    pigato__worker_release (busy, requests [3]);
    pigato__worker_release (idle, requests [1]);
    pigato__worker_release (idle, requests [2]);
    for (int index = 0; index < 5; index++)
        pigato__request_destroy (NULL, &requests [index]);
    pigato__service_remove_worker (service, busy);
    pigato__service_remove_worker (service, idle);
    free (busy);
    free (idle);
    pigato__services_destroy (&services);
}

static void
test_rejecting_workers_are_skipped_until_all_have_rejected (void **state)
{
    (void) state;
    pigato__services_t *services = pigato__services_new ();
    pigato__service_t *service = pigato__services_require (services, "s", 1);
    pigato__worker_t *first = s_worker (10, 5);
    pigato__worker_t *second = s_worker (11, 5);
    pigato__service_add_worker (service, first);
    pigato__service_add_worker (service, second);
    pigato__request_t *request = s_request ("c", "r", NULL);
    assert_false (pigato__service_all_rejected (service, request));
    assert_int_equal (pigato__request_add_reject (request, 10), 0);
    assert_int_equal (pigato__request_add_reject (request, 10), 0);
    assert_int_equal (request->rejected_count, 1);
    for (int round = 0; round < 20; round++)
        assert_ptr_equal (pigato__service_pick (service, request, round % 2,
                                                NULL, NULL),
                          second);
    assert_false (pigato__service_all_rejected (service, request));
    assert_int_equal (pigato__request_add_reject (request, 11), 0);
    assert_true (pigato__service_all_rejected (service, request));
    assert_null (pigato__service_pick (service, request, PIGATO__DMODE_LOAD,
                                       NULL, NULL));
    pigato__request_destroy (NULL, &request);
    pigato__service_remove_worker (service, first);
    pigato__service_remove_worker (service, second);
    assert_int_equal (service->worker_count, 0);
    free (first);
    free (second);
    pigato__services_destroy (&services);
}

static void
test_rand_mode_uses_every_eligible_worker (void **state)
{
    (void) state;
    pigato__services_t *services = pigato__services_new ();
    pigato__service_t *service = pigato__services_require (services, "s", 1);
    pigato__worker_t *workers [3];
    for (int index = 0; index < 3; index++) {
        workers [index] = s_worker ((uint64_t) index + 1, 10);
        pigato__service_add_worker (service, workers [index]);
    }
    pigato__request_t *request = s_request ("c", "r", NULL);
    int seen [3] = { 0 };
    for (int round = 0; round < 300; round++) {
        pigato__worker_t *pick = pigato__service_pick (
            service, request, PIGATO__DMODE_RAND, NULL, NULL);
        for (int index = 0; index < 3; index++)
            if (pick == workers [index])
                seen [index]++;
    }
    for (int index = 0; index < 3; index++)
        assert_true (seen [index] > 30);  //  ~100 each expected
    pigato__request_destroy (NULL, &request);
    for (int index = 0; index < 3; index++) {
        pigato__service_remove_worker (service, workers [index]);
        free (workers [index]);
    }
    pigato__services_destroy (&services);
}

static void
test_request_opts_timeout_and_retry (void **state)
{
    (void) state;
    struct {
        const char *opts;
        int64_t timeout;
        int retries;
        int rc;
    } cases [] = {
        { NULL, 60000, 0, 0 },
        { "{\"timeout\":1500,\"retry\":2}", 1500, 2, 0 },
        { "{\"timeout\":-1}", -1, 0, 0 },
        { "{\"timeout\":0}", 60000, 0, 0 },  //  pigato: falsy = default
        { "{\"retry\":true}", 60000, 1, 0 },
        { "{\"retry\":1000}", 60000, PIGATO__RETRY_MAX, 0 },
        { "{\"timeout\":\"soon\"}", 60000, 0, 0 },
        { "{\"timeout\":9223372036854775000}", PIGATO__TIMEOUT_CAP, 0, 0 },
        { "{\"timeout\":1e300,\"retry\":1e300}", PIGATO__TIMEOUT_CAP,
          PIGATO__RETRY_MAX, 0 },
        { "{\"timeout\":0.5,\"retry\":0.5}", 60000, 0, 0 },
        { "{\"retry\":-3}", 60000, 0, 0 },
        { "not json", 60000, 0, -1 },
        { "[1,2]", 60000, 0, -1 },
    };
    for (size_t index = 0; index < sizeof cases / sizeof cases [0]; index++) {
        pigato__request_t *request = s_request ("c", "r", cases [index].opts);
        assert_int_equal (pigato__request_parse_opts (request, 60000),
                          cases [index].rc);
        assert_int_equal (request->timeout, cases [index].timeout);
        assert_int_equal (request->retries_left, cases [index].retries);
        pigato__request_destroy (NULL, &request);
    }
}

static void
test_binary_keys_separate_client_and_rid (void **state)
{
    (void) state;
    pigato__bkey_t first, second;
    //  ("ab","c") and ("a","bc") must be different keys
    assert_int_equal (pigato__bkey_set (&first, "ab", 2, "c", 1), 0);
    assert_int_equal (pigato__bkey_set (&second, "a", 1, "bc", 2), 0);
    zhashx_t *table = pigato__bkey_table_new ();
    zhashx_insert (table, &first, (void *) "first");
    assert_null (zhashx_lookup (table, &second));
    pigato__bkey_t probe;
    assert_int_equal (pigato__bkey_set (&probe, "ab", 2, "c", 1), 0);
    assert_string_equal ((char *) zhashx_lookup (table, &probe), "first");
    //  A copied key (hash included) finds what a freshly built one finds,
    //  and so does a request made with a key built beforehand
    pigato__bkey_t copy;
    memset (&copy, 0xee, sizeof copy);
    pigato__bkey_copy (&copy, &probe);
    assert_string_equal ((char *) zhashx_lookup (table, &copy), "first");
    pigato__bytes_t client = { (const byte *) "client-1", 8 };
    pigato__bytes_t alias = { (const byte *) "alias-1", 7 };
    pigato__bytes_t rid = { (const byte *) "0001", 4 };
    pigato__bytes_t data = { (const byte *) "x", 1 };
    assert_int_equal (pigato__bkey_set (&probe, "alias-1", 7, "0001", 4), 0);
    pigato__request_t *request = pigato__request_new (
        NULL, &client, &alias, &rid, &probe, NULL, &data, NULL);
    assert_non_null (request);
    zhashx_insert (table, &request->key, request);
    pigato__bkey_t fresh;
    assert_int_equal (pigato__bkey_set (&fresh, "alias-1", 7, "0001", 4), 0);
    assert_ptr_equal (zhashx_lookup (table, &fresh), request);
    pigato__bytes_t got = pigato__request_client (request);
    assert_int_equal (got.size, 8);
    assert_memory_equal (got.data, "client-1", 8);
    got = pigato__request_alias (request);
    assert_int_equal (got.size, 7);
    assert_memory_equal (got.data, "alias-1", 7);
    zhashx_delete (table, &fresh);
    assert_null (zhashx_lookup (table, &request->key));
    pigato__request_destroy (NULL, &request);
    char long_id [300];
    memset (long_id, 'x', sizeof long_id);
    assert_int_equal (pigato__bkey_set (&probe, long_id, 256, NULL, 0), -1);
    zhashx_destroy (&table);
}

//  czmq's default zhashx hasher (zhashx.c, "modified Bernstein"): no key,
//  so names that collide under it are easy to find.
static size_t
s_czmq_default_hash (const char *text)
{
    size_t hash = 0;
    while (*text)
        hash = 33 * hash ^ (size_t) *text++;
    return hash;
}

//  Service names are hashed with a key: names that all collide under
//  czmq's default hash spread, and the table serves each of them.
static void
test_service_names_that_collide_in_czmq_spread (void **state)
{
    (void) state;
    //  Three-character names: group them by czmq's hash, keep the largest
    //  group of identical hashes
    static const char alphabet [] = "abcdefghijklmnopqrstuvwxyz0123456789";
    enum { LETTERS = 36, NAMES = LETTERS * LETTERS * LETTERS };
    size_t *hashes = (size_t *) malloc (NAMES * sizeof (size_t));
    for (int index = 0; index < NAMES; index++) {
        char name [4] = { alphabet [index / (LETTERS * LETTERS)],
                          alphabet [index / LETTERS % LETTERS],
                          alphabet [index % LETTERS], 0 };
        hashes [index] = s_czmq_default_hash (name);
    }
    //  Three characters hash below 2^18 there: count them in a histogram
    enum { RANGE = 1 << 18 };
    unsigned *counts = (unsigned *) calloc (RANGE, sizeof (unsigned));
    size_t best = 0, best_count = 0;
    for (int index = 0; index < NAMES; index++) {
        assert_true (hashes [index] < RANGE);
        if (++counts [hashes [index]] > best_count) {
            best_count = counts [hashes [index]];
            best = hashes [index];
        }
    }
    free (counts);
    assert_true (best_count >= 4);  //  czmq: one bucket for all of them
    pigato__services_t *services = pigato__services_new ();
    size_t keyed [64];
    size_t used = 0;
    for (int index = 0; index < NAMES && used < 64; index++) {
        if (hashes [index] != best)
            continue;
        char name [4] = { alphabet [index / (LETTERS * LETTERS)],
                          alphabet [index / LETTERS % LETTERS],
                          alphabet [index % LETTERS], 0 };
        keyed [used] = pigato__hash_keyed_text (name);
        for (size_t other = 0; other < used; other++)
            assert_true (keyed [other] != keyed [used]);
        used++;
        pigato__service_t *service = pigato__services_require (services, name,
                                                               3);
        assert_non_null (service);
        assert_string_equal (service->name, name);
        assert_ptr_equal (pigato__services_lookup (services, name, 3), service);
    }
    assert_int_equal (used, best_count < 64 ? best_count : 64);
    pigato__services_destroy (&services);
    free (hashes);
}

//  A pool gives destroyed records back out, holds at most
//  PIGATO__REQUEST_POOL_MAX, and a record from it is as good as new.
static void
test_request_pool_recycles_records (void **state)
{
    (void) state;
    pigato__request_pool_t pool = { NULL, 0 };
    enum { COUNT = PIGATO__REQUEST_POOL_MAX + 50 };
    pigato__request_t *requests [COUNT];
    pigato__bytes_t client = { (const byte *) "client-1", 8 };
    pigato__bytes_t data = { (const byte *) "body", 4 };
    pigato__bytes_t opts = { (const byte *) "{\"retry\":1}", 11 };
    for (int index = 0; index < COUNT; index++) {
        char rid [16];
        snprintf (rid, sizeof rid, "%04d", index);
        pigato__bytes_t rid_bytes = { (const byte *) rid, strlen (rid) };
        requests [index] = pigato__request_new (
            &pool, &client, &client, &rid_bytes, NULL, NULL, &data, &opts);
        assert_non_null (requests [index]);
        requests [index]->timeout = 5;  //  dirty it
        requests [index]->retries_left = 3;
    }
    assert_int_equal (pool.count, 0);
    //  The first MAX destroyed are kept, the rest freed
    pigato__request_t *newest_spare = requests [PIGATO__REQUEST_POOL_MAX - 1];
    for (int index = 0; index < COUNT; index++)
        pigato__request_destroy (&pool, &requests [index]);
    assert_int_equal (pool.count, PIGATO__REQUEST_POOL_MAX);
    //  The newest spare comes out first, clean
    pigato__bytes_t rid = { (const byte *) "again", 5 };
    pigato__request_t *again = pigato__request_new (
        &pool, &client, &client, &rid, NULL, NULL, &data, NULL);
    assert_non_null (again);
    assert_int_equal (pool.count, PIGATO__REQUEST_POOL_MAX - 1);
    assert_ptr_equal (again, newest_spare);
    assert_int_equal (again->timeout, PIGATO_TIMEOUT_MS);
    assert_int_equal (again->retries_left, 0);
    assert_null (again->opts);
    assert_null (again->worker);
    pigato__bytes_t got = pigato__request_rid (again);
    assert_int_equal (got.size, 5);
    assert_memory_equal (got.data, "again", 5);
    pigato__request_destroy (&pool, &again);
    pigato__request_pool_drain (&pool);
    assert_int_equal (pool.count, 0);
    assert_null (pool.spare);
}

//  Our SipHash with 2 and 4 rounds is libsodium's SipHash-2-4 (and the
//  paper's test vector), for every length and alignment; keys use 1-3,
//  which must differ from 2-4 and depend on the key.
static void
test_siphash_matches_libsodium_with_2_4_rounds (void **state)
{
    (void) state;
    assert_true (sodium_init () >= 0);
    unsigned char key [16];
    byte data [140];
    for (int index = 0; index < 16; index++)
        key [index] = (unsigned char) index;
    for (int index = 0; index < 15; index++)
        data [index] = (byte) index;
    assert_true (pigato__siphash (key, data, 15, 2, 4)
                 == 0xa129ca6149be45e5ULL);
    for (int trial = 0; trial < 20; trial++) {
        randombytes_buf (key, sizeof key);
        randombytes_buf (data, sizeof data);
        for (size_t size = 0; size <= 128; size++) {
            size_t offset = size % 8;
            uint64_t expected;
            crypto_shorthash ((unsigned char *) &expected, data + offset, size,
                              key);
            assert_true (pigato__siphash (key, data + offset, size, 2, 4)
                         == expected);
            assert_true (pigato__siphash (key, data + offset, size, 1, 3)
                         != expected);
        }
    }
    unsigned char other [16];
    memcpy (other, key, sizeof other);
    other [15] ^= 1;
    assert_true (pigato__siphash (key, data, 30, 1, 3)
                 != pigato__siphash (other, data, 30, 1, 3));
}

//  The parser-free reading of compact opts agrees with jansson's on every
//  text it accepts, and accepts the forms clients send.
static void
s_slow (const char *text, int64_t *timeout, int *retry, bool *valid)
{
    json_error_t error;
    json_t *root = json_loads (text, 0, &error);
    *valid = root && json_is_object (root);
    if (*valid) {
        *timeout = pigato__opts_timeout (root, 60000);
        *retry = pigato__opts_retry (root);
    }
    json_decref (root);
}

static void
test_fast_opts_agree_with_the_json_parser (void **state)
{
    (void) state;
    const char *accepted [] = { "{}",
                                "{\"timeout\":30000}",
                                "{\"timeout\":-1}",
                                "{\"timeout\":0}",
                                "{\"retry\":true}",
                                "{\"retry\":3,\"timeout\":5}",
                                "{\"retry\":99}",
                                "{\"timeout\":5,\"timeout\":7}",
                                "{\"persist\":false,\"x_1\":12}",
                                "{\"timeout\":999999999999999}",
                                "{\"timeout\":-0}",
                                "{\"service\":\"bench\"}",
                                "{\"titanic\":\"0a1B\",\"attempt\":2}",
                                "{\"a\":\"\",\"timeout\":9,\"b\":\"x y/z\"}" };
    const char *refused [] = { "",
                               "{",
                               "}",
                               "{,}",
                               "{\"timeout\":1,}",
                               "{\"timeout\":01}",
                               "{ \"timeout\":1}",
                               "{\"timeout\":1.5}",
                               "{\"timeout\":\"1\"}",
                               "{\"t\\u0069meout\":1}",
                               "{\"timeout\":1}}",
                               "{\"\":1}",
                               "{\"timeout\":1234567890123456}",
                               "{\"timeout\":null}",
                               "[1]",
                               "{\"timeout\":-}",
                               "{\"a\":tru}",
                               "{\"retry\":\"2\"}",
                               "{\"workerId\":\"w1\"}",
                               "{\"a\":\"x\\\"y\"}",
                               "{\"a\":\"x\\\\y\"}",
                               "{\"a\":\"caf\xc3\xa9\"}",
                               "{\"a\":\"tab\there\"}",
                               "{\"a\":\"x}",
                               "{\"a\":\"x\"\"}",
                               "{\"a\":{}}",
                               "{\"a\":[]}" };
    for (size_t index = 0; index < sizeof accepted / sizeof *accepted;
         index++) {
        int64_t timeout, slow_timeout;
        int retry, slow_retry;
        bool valid;
        const char *text = accepted [index];
        assert_true (
            pigato__opts_fast (text, strlen (text), 60000, &timeout, &retry));
        s_slow (text, &slow_timeout, &slow_retry, &valid);
        assert_true (valid);
        assert_int_equal (timeout, slow_timeout);
        assert_int_equal (retry, slow_retry);
    }
    for (size_t index = 0; index < sizeof refused / sizeof *refused; index++) {
        int64_t timeout;
        int retry;
        assert_false (pigato__opts_fast (refused [index],
                                         strlen (refused [index]), 60000,
                                         &timeout, &retry));
    }
    //  Random texts built from members, some of them broken: whatever the
    //  fast path accepts, jansson accepts with the same reading
    const char *keys [] = { "\"timeout\"", "\"retry\"", "\"x_1\"",
                            "\"\"",        "\"t o\"",   "timeout" };
    const char *values [] = { "1",
                              "0",
                              "-1",
                              "30000",
                              "true",
                              "false",
                              "01",
                              "1.5",
                              "-",
                              "null",
                              "999999999999999",
                              "-0",
                              "1234567890123456",
                              "\"7\"",
                              "\"a b\"",
                              "\"x\\\"y\"",
                              "\"",
                              "tru",
                              "1e3",
                              "7" };
    const char *separators [] = { ",", ",", ",", " ,", ",,", "" };
    unsigned seed = 12345;
    int accepted_count = 0;
    for (int round = 0; round < 100000; round++) {
        char text [256] = "{";
        seed = seed * 1103515245 + 12345;
        int members = (int) ((seed >> 16) % 4);
        for (int member = 0; member < members; member++) {
            if (member) {
                seed = seed * 1103515245 + 12345;
                strcat (text, separators [(seed >> 16) % 6]);
            }
            seed = seed * 1103515245 + 12345;
            strcat (text, keys [(seed >> 16) % 6]);
            seed = seed * 1103515245 + 12345;
            strcat (text, (seed >> 16) % 20 ? ":" : "=");
            seed = seed * 1103515245 + 12345;
            strcat (text, values [(seed >> 16) % 20]);
        }
        strcat (text, "}");
        int64_t timeout, slow_timeout;
        int retry, slow_retry;
        bool valid;
        if (pigato__opts_fast (text, strlen (text), 60000, &timeout, &retry)) {
            accepted_count++;
            s_slow (text, &slow_timeout, &slow_retry, &valid);
            if (!valid || timeout != slow_timeout || retry != slow_retry)
                fail_msg ("fast and full readings differ for %s", text);
        }
    }
    assert_true (accepted_count > 100);  //  the generator reaches it
}

//  The flat reader hands each member back as written: key, kind, value,
//  and the member's whole text (titanic passes members on that way).
static void
test_flat_members_are_read_as_written (void **state)
{
    (void) state;
    const char *text = "{\"service\":\"a/b c\",\"ttl\":-12,\"on\":true,"
                       "\"off\":false,\"e\":\"\"}";
    struct {
        const char *key, *value, *member;
        int kind;
        int64_t integer;
    } expected [] = {
        { "service", "a/b c", "\"service\":\"a/b c\"", PIGATO__FLAT_STRING, 0 },
        { "ttl", "-12", "\"ttl\":-12", PIGATO__FLAT_INTEGER, -12 },
        { "on", "true", "\"on\":true", PIGATO__FLAT_TRUE, 0 },
        { "off", "false", "\"off\":false", PIGATO__FLAT_FALSE, 0 },
        { "e", "", "\"e\":\"\"", PIGATO__FLAT_STRING, 0 }
    };
    size_t cursor = 0;
    pigato__flat_t member;
    for (size_t index = 0; index < sizeof expected / sizeof *expected;
         index++) {
        assert_int_equal (
            pigato__flat_next (text, strlen (text), &cursor, &member), 1);
        assert_int_equal (member.key_size, strlen (expected [index].key));
        assert_memory_equal (member.key, expected [index].key, member.key_size);
        assert_int_equal (member.value_size, strlen (expected [index].value));
        assert_memory_equal (member.value, expected [index].value,
                             member.value_size);
        assert_int_equal (member.text_size, strlen (expected [index].member));
        assert_memory_equal (member.text, expected [index].member,
                             member.text_size);
        assert_int_equal (member.kind, expected [index].kind);
        assert_int_equal (member.integer, expected [index].integer);
    }
    assert_int_equal (pigato__flat_next (text, strlen (text), &cursor, &member),
                      0);
    cursor = 0;
    assert_int_equal (pigato__flat_next ("{}", 2, &cursor, &member), 0);
    cursor = 0;
    assert_int_equal (pigato__flat_next ("{\"a\":1,}", 8, &cursor, &member), 1);
    assert_int_equal (pigato__flat_next ("{\"a\":1,}", 8, &cursor, &member),
                      -1);
}

//  The heap's choice is the least loaded worker with room (ties: fewest
//  dispatched) through any mix of dispatches, releases and concurrency
//  changes: checked against a plain scan at every step.
static void
test_least_loaded_choice_holds_through_random_load (void **state)
{
    (void) state;
    pigato__services_t *services = pigato__services_new ();
    pigato__service_t *echo = pigato__services_require (services, "echo", 4);
    enum { WORKERS = 40, STEPS = 20000 };
    pigato__worker_t *workers [WORKERS];
    for (int index = 0; index < WORKERS; index++) {
        workers [index] = s_worker ((uint64_t) index + 1, 1 + index % 5);
        pigato__service_add_worker (echo, workers [index]);
    }
    pigato__request_t *held [STEPS];
    size_t held_count = 0;
    unsigned seed = 7;
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 1103515245 + 12345;
        int action = (int) ((seed >> 16) % 10);
        if (action < 5) {  //  dispatch one
            pigato__request_t *request = s_request ("c", "r", NULL);
            pigato__worker_t *picked = pigato__service_pick (
                echo, request, PIGATO__DMODE_LOAD, NULL, NULL);
            pigato__worker_t *best = NULL;
            for (int index = 0; index < WORKERS; index++) {
                pigato__worker_t *worker = workers [index];
                if (pigato__worker_has_room (worker)
                    && (!best || worker->in_flight < best->in_flight
                        || (worker->in_flight == best->in_flight
                            && worker->dispatched < best->dispatched)))
                    best = worker;
            }
            if (!best) {
                assert_null (picked);
                pigato__request_destroy (NULL, &request);
                continue;
            }
            assert_non_null (picked);
            assert_int_equal (picked->in_flight, best->in_flight);
            assert_int_equal (picked->dispatched, best->dispatched);
            pigato__worker_take (picked, request);
            held [held_count++] = request;
        }
        else if (action < 9 && held_count) {  //  one finishes
            size_t victim = (seed >> 8) % held_count;
            pigato__request_t *request = held [victim];
            held [victim] = held [--held_count];
            pigato__worker_release (request->worker, request);
            pigato__request_destroy (NULL, &request);
        }
        else {  //  concurrency change
            pigato__worker_t *worker = workers [(seed >> 8) % WORKERS];
            worker->concurrency = (int) ((seed >> 4) % 7) - 1;  //  -1..5
            pigato__worker_update (worker);
        }
    }
    while (held_count) {
        pigato__request_t *request = held [--held_count];
        pigato__worker_release (request->worker, request);
        pigato__request_destroy (NULL, &request);
    }
    for (int index = 0; index < WORKERS; index++) {
        pigato__service_remove_worker (echo, workers [index]);
        free (workers [index]);
    }
    pigato__services_release (services, &echo);
    assert_null (echo);
    pigato__services_destroy (&services);
}

//  The text hasher the client, worker and ACL tables use: the same text
//  hashes the same, whatever its alignment; every length works; a table
//  with it finds each of 50,000 keys of a real client's rid shape
static void
test_text_hash_is_stable_and_spreads_keys (void **state)
{
    (void) state;
    char buffer [64], moved [72];
    for (size_t length = 0; length < 40; length++) {
        memset (buffer, 0, sizeof buffer);
        for (size_t index = 0; index < length; index++)
            buffer [index] = (char) ('a' + (index * 7 + length) % 26);
        memcpy (moved + 3, buffer, length + 1);
        assert_int_equal (pigato__hash_text (buffer),
                          pigato__hash_text (moved + 3));
        if (length) {
            buffer [length - 1] ^= 1;
            assert_int_not_equal (pigato__hash_text (buffer),
                                  pigato__hash_text (moved + 3));
        }
    }
    zhashx_t *table = zhashx_new ();
    zhashx_set_key_hasher (table, pigato__hash_text);
    char key [32];
    size_t buckets_hit = 0;
    zhashx_t *seen = zhashx_new ();
    for (int index = 0; index < 50000; index++) {
        snprintf (key, sizeof key, "00f3a9c41b2e7d58%08x", index);
        assert_int_equal (
            zhashx_insert (table, key, (void *) (intptr_t) (index + 1)), 0);
        char bucket [24];
        snprintf (bucket, sizeof bucket, "%zu",
                  pigato__hash_text (key) % 65521);
        if (zhashx_insert (seen, bucket, (void *) 1) == 0)
            buckets_hit++;
    }
    for (int index = 0; index < 50000; index++) {
        snprintf (key, sizeof key, "00f3a9c41b2e7d58%08x", index);
        assert_int_equal ((intptr_t) zhashx_lookup (table, key), index + 1);
    }
    //  50,000 keys in 65,521 buckets: a uniform hash fills about 35,000
    assert_true (buckets_hit > 30000);
    zhashx_destroy (&seen);
    zhashx_destroy (&table);
}

//  Names nothing serves leave the pending list on the first walk that
//  looks at them, and come back when a wildcard or version gains its
//  first worker (the walk of core.c, done by hand here)
static size_t
s_walk (pigato__services_t *services, const char *prefix, size_t *walked)
{
    size_t matched = 0;
    *walked = 0;
    pigato__service_t *next;
    for (pigato__service_t *pending = pigato__services_pending (services);
         pending; pending = next) {
        next = pending->pending_next;
        (*walked)++;
        if (strncmp (pending->name, prefix, strlen (prefix)) == 0)
            matched++;
        else
            pigato__services_park_unservable (services, pending);
    }
    return matched;
}

static void
test_unservable_pending_names_are_parked_until_a_wildcard_comes (void **state)
{
    (void) state;
    pigato__services_t *services = pigato__services_new ();
    pigato__service_t *wild = pigato__services_require (services, "w.*", 3);
    pigato__worker_t *worker = s_worker (1, 10);
    pigato__service_add_worker (wild, worker);
    //  1,000 names nobody serves, 2 the wildcard serves, 1 with workers
    //  of its own, each with one queued request
    enum { JUNK = 1000 };
    pigato__request_t *requests [JUNK + 3];
    char name [32];
    for (int index = 0; index < JUNK + 3; index++) {
        if (index < JUNK)
            snprintf (name, sizeof name, "junk-%d", index);
        else
            snprintf (name, sizeof name,
                      index == JUNK       ? "w.a"
                      : index == JUNK + 1 ? "w.b"
                                          : "own");
        pigato__service_t *service = pigato__services_require (services, name,
                                                               strlen (name));
        requests [index] = s_request ("c", name, NULL);
        requests [index]->service = service;
        pigato__service_enqueue (service, requests [index], false);
    }
    pigato__worker_t *own_worker = s_worker (2, 10);
    pigato__service_add_worker (pigato__services_lookup (services, "own", 3),
                                own_worker);
    size_t walked;
    assert_int_equal (s_walk (services, "w.", &walked), 2);
    assert_int_equal (walked, JUNK + 3);
    assert_int_equal (pigato__services_parked (services), JUNK);
    //  The next walk sees only what something serves
    assert_int_equal (s_walk (services, "w.", &walked), 2);
    assert_int_equal (walked, 3);
    //  A wildcard for some of the parked names gains its first worker:
    //  every parked name is walked once more; those it serves stay
    pigato__service_t *junk5 = pigato__services_require (services, "junk-5*",
                                                         7);
    pigato__worker_t *junk_worker = s_worker (3, 10);
    pigato__service_add_worker (junk5, junk_worker);
    assert_int_equal (pigato__services_parked (services), 0);
    assert_int_equal (s_walk (services, "junk-5", &walked), 111);
    assert_int_equal (walked, JUNK + 3);
    assert_int_equal (pigato__services_parked (services), JUNK - 111);
    assert_int_equal (s_walk (services, "w.", &walked), 2);
    assert_int_equal (walked, 3 + 111);
    //  A parked name whose last request goes is off both lists
    pigato__service_t *junk7 = pigato__services_lookup (services, "junk-7", 6);
    assert_true (junk7->parked);
    pigato__service_dequeue (junk7, requests [7]);
    assert_false (junk7->parked);
    assert_int_equal (pigato__services_parked (services), JUNK - 112);
    for (int index = 0; index < JUNK + 3; index++) {
        if (index != 7)
            pigato__service_dequeue (requests [index]->service,
                                     requests [index]);
        pigato__request_destroy (NULL, &requests [index]);
    }
    assert_int_equal (pigato__services_parked (services), 0);
    assert_null (pigato__services_pending (services));
    pigato__service_remove_worker (wild, worker);
    pigato__service_remove_worker (junk5, junk_worker);
    pigato__service_remove_worker (pigato__services_lookup (services, "own", 3),
                                   own_worker);
    free (worker);
    free (junk_worker);
    free (own_worker);
    pigato__services_destroy (&services);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_least_loaded_choice_holds_through_random_load),
        cmocka_unit_test (test_fast_opts_agree_with_the_json_parser),
        cmocka_unit_test (
            test_services_are_created_on_demand_and_released_when_empty),
        cmocka_unit_test (test_queue_is_fifo_and_front_insert_jumps_it),
        cmocka_unit_test (
            test_load_mode_picks_least_in_flight_and_honours_concurrency),
        cmocka_unit_test (
            test_rejecting_workers_are_skipped_until_all_have_rejected),
        cmocka_unit_test (test_rand_mode_uses_every_eligible_worker),
        cmocka_unit_test (test_request_opts_timeout_and_retry),
        cmocka_unit_test (test_flat_members_are_read_as_written),
        cmocka_unit_test (test_binary_keys_separate_client_and_rid),
        cmocka_unit_test (test_siphash_matches_libsodium_with_2_4_rounds),
        cmocka_unit_test (test_request_pool_recycles_records),
        cmocka_unit_test (test_service_names_that_collide_in_czmq_spread),
        cmocka_unit_test (test_text_hash_is_stable_and_spreads_keys),
        cmocka_unit_test (
            test_unservable_pending_names_are_parked_until_a_wildcard_comes),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
