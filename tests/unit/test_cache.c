/*  test_cache.c - the broker's reply cache: identical requests hit,
    different bodies or services miss, entries expire, the byte budget
    evicts least recently used first, and a zero budget caches nothing.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include "../../mesh/broker/cache.h"

#define B(text) ((pigato__bytes_t) { (const byte *) (text), strlen (text) })

static void
s_put (pigato__cache_t *cache, const char *service, const char *body,
       const char *data, int64_t expires)
{
    pigato__bytes_t b = B (body), d = B (data), o = B ("{\"cache\":100}");
    assert_int_equal (pigato__cache_put (cache, service, &b, &d, &o, expires),
                      0);
}

static const char *
s_get (pigato__cache_t *cache, const char *service, const char *body,
       int64_t now)
{
    static char text [1024];
    pigato__bytes_t b = B (body);
    pigato__cached_t reply;
    if (!pigato__cache_get (cache, service, &b, now, &reply))
        return NULL;
    assert_true (reply.data.size < sizeof text);
    memcpy (text, reply.data.data, reply.data.size);
    text [reply.data.size] = 0;
    assert_int_equal (reply.opts.size, strlen ("{\"cache\":100}"));
    return text;
}

static void
test_identical_requests_hit_until_expiry (void **state)
{
    (void) state;
    pigato__cache_t *cache = pigato__cache_new (1 << 20);
    s_put (cache, "echo", "\"a\"", "reply-a", 1000);
    assert_string_equal (s_get (cache, "echo", "\"a\"", 999), "reply-a");
    assert_null (s_get (cache, "echo", "\"b\"", 10));     //  other body
    assert_null (s_get (cache, "echo2", "\"a\"", 10));    //  other service
    assert_null (s_get (cache, "ech", "o\"a\"", 10));     //  no run-together
    assert_null (s_get (cache, "echo", "\"a\"", 1000));   //  expired
    assert_int_equal (pigato__cache_entries (cache), 0);  //  and dropped
    s_put (cache, "echo", "", "empty body", 50);
    assert_string_equal (s_get (cache, "echo", "", 1), "empty body");
    s_put (cache, "echo", "", "replaced", 50);
    assert_string_equal (s_get (cache, "echo", "", 1), "replaced");
    assert_int_equal (pigato__cache_entries (cache), 1);
    assert_int_equal (pigato__cache_hits (cache), 3);
    pigato__cache_destroy (&cache);
    assert_null (cache);
}

static void
test_budget_evicts_least_recently_used (void **state)
{
    (void) state;
    //  Each entry costs its bytes plus a fixed overhead; room for two
    char big [401];
    memset (big, 'x', 400);
    big [400] = 0;
    size_t one = strlen ("svc") + 3 + 400 + strlen ("{\"cache\":100}") + 128;
    pigato__cache_t *cache = pigato__cache_new (2 * one + 10);
    s_put (cache, "svc", "\"1\"", big, 1000);
    s_put (cache, "svc", "\"2\"", big, 1000);
    assert_non_null (s_get (cache, "svc", "\"1\"", 0));  //  1 is now recent
    s_put (cache, "svc", "\"3\"", big, 1000);            //  evicts 2
    assert_non_null (s_get (cache, "svc", "\"1\"", 0));
    assert_null (s_get (cache, "svc", "\"2\"", 0));
    assert_non_null (s_get (cache, "svc", "\"3\"", 0));
    assert_true (pigato__cache_bytes (cache) <= 2 * one + 10);
    //  Too big for the budget at all: refused, nothing evicted
    char huge [3000];
    memset (huge, 'y', sizeof huge - 1);
    huge [sizeof huge - 1] = 0;
    pigato__bytes_t b = B ("\"4\""), d = B (huge), o = B ("{}");
    assert_int_equal (pigato__cache_put (cache, "svc", &b, &d, &o, 1000), -1);
    assert_int_equal (pigato__cache_entries (cache), 2);
    pigato__cache_set_max (cache, 0);  //  off
    assert_int_equal (pigato__cache_entries (cache), 0);
    assert_int_equal (pigato__cache_put (cache, "svc", &b, &o, &o, 1000), -1);
    pigato__cache_destroy (&cache);
}

static void
test_ttl_is_read_from_reply_opts (void **state)
{
    (void) state;
    struct {
        const char *opts;
        int64_t ttl;
    } cases [] = { { "", 0 },
                   { "{}", 0 },
                   { "{\"cache\":1500}", 1500 },
                   { "{\"timeout\":5,\"cache\":20}", 20 },
                   { "{\"cache\":0}", 0 },
                   { "{\"cache\":-5}", 0 },
                   { "{\"cache\":\"10\"}", 0 },
                   { "{\"cache\":1e15}", 1000000000000 },
                   { "not json \"cache\"", 0 },
                   { "{\"nocache\":5}", 0 } };
    for (size_t index = 0; index < sizeof cases / sizeof *cases; index++) {
        pigato__bytes_t opts = B (cases [index].opts);
        assert_int_equal (pigato__cache_ttl (&opts), cases [index].ttl);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_identical_requests_hit_until_expiry),
        cmocka_unit_test (test_budget_evicts_least_recently_used),
        cmocka_unit_test (test_ttl_is_read_from_reply_opts)
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
