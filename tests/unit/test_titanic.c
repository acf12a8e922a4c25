/*  test_titanic.c - durable requests' submissions (mesh/broker/titanic.h)
    as titanic.request reads them: the compact opts clients send are read
    without a JSON parser, and that reading must never differ from
    jansson's, for what is accepted (service, key, ttl, keep, timeout, the
    opts passed to the worker) and for what is refused.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>
#include "../../mesh/broker/titanic.h"

//  Reads opts both ways and checks that the two readings agree; returns
//  true if the submission was accepted.
static bool
s_agree (const char *opts_text)
{
    pigato__bytes_t body = { (const byte *) "payload", 7 };
    pigato__bytes_t opts = { (const byte *) opts_text, strlen (opts_text) };
    pigato__titanic_in_t in = {
        .identity = "alice", .body = &body, .body_count = 1, .opts = &opts
    };
    in.caller.framing = PIGATO__FRAMING_NATIVE;
    pigato__titanic_submission_t fast, full;
    memset (&fast, 0, sizeof fast);
    memset (&full, 0, sizeof full);
    char fast_text [600], full_text [600];
    const char *fast_refusal = pigato__titanic_read (
        &in, false, &fast, fast_text, sizeof fast_text);
    const char *full_refusal = pigato__titanic_read (
        &in, true, &full, full_text, sizeof full_text);
    if (!fast_refusal != !full_refusal
        || (fast_refusal && strcmp (fast_refusal, full_refusal)))
        fail_msg ("%s: refusals differ: %s / %s", opts_text,
                  fast_refusal ? fast_refusal : "none",
                  full_refusal ? full_refusal : "none");
    if (!fast_refusal) {
        if (strcmp (fast.service, full.service) || strcmp (fast.key, full.key)
            || fast.ttl != full.ttl || fast.keep != full.keep
            || fast.timeout != full.timeout || fast.body_kind != full.body_kind
            || fast.body_size != full.body_size
            || memcmp (fast.body, full.body, fast.body_size))
            fail_msg ("%s: readings differ", opts_text);
        //  The worker's opts: the same members (jansson may order them)
        if (!fast.opts != !full.opts)
            fail_msg ("%s: worker opts %s / %s", opts_text,
                      fast.opts ? fast.opts : "none",
                      full.opts ? full.opts : "none");
        if (fast.opts) {
            json_t *a = json_loads (fast.opts, 0, NULL);
            json_t *b = json_loads (full.opts, 0, NULL);
            if (!a || !json_equal (a, b))
                fail_msg ("%s: worker opts %s / %s", opts_text, fast.opts,
                          full.opts);
            json_decref (a);
            json_decref (b);
        }
    }
    free (fast.opts);
    free (fast.body);
    free (full.opts);
    free (full.body);
    return !fast_refusal;
}

static void
test_usual_submissions_read_the_same_both_ways (void **state)
{
    (void) state;
    const char *accepted [] = {
        "{\"service\":\"bench\"}",
        "{\"service\":\"bench\",\"timeout\":5000}",
        "{\"service\":\"a.b\",\"key\":\"order-17\",\"ttl\":60000,\"keep\":1}",
        "{\"ttl\":2592000000,\"service\":\"s\",\"x\":\"y\",\"n\":-3,\"t\":true}",
        "{\"service\":\"s\",\"retry\":3,\"attempt\":9,\"titanic\":\"old\"}",
        "{\"service\":\"s\",\"timeout\":-1}",
        "{\"service\":\"s\",\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,"
        "\"g\":7,\"h\":8,\"i\":9}",
        "{\"service\":\"s\",\"key\":\"caf\\u00e9\"}"
    };
    for (size_t index = 0; index < sizeof accepted / sizeof *accepted; index++)
        if (!s_agree (accepted [index]))
            fail_msg ("refused: %s", accepted [index]);
    const char *refused [] = {
        "",
        "{}",
        "{\"service\":\"\"}",
        "{\"service\":7}",
        "{\"service\":\"s\",\"service\":\"t\"}",
        "{\"service\":\"s\",\"x\":1,\"x\":2}",
        "{\"service\":\"s\",\"key\":\"\"}",
        "{\"service\":\"s\",\"key\":5}",
        "{\"service\":\"s\",\"key\":"
        "\"12345678901234567890123456789012345678901234567890123456789012345\"}",
        "{\"service\":\"s\",\"key\":\"tab\\there\"}",
        "{\"service\":\"s\",\"ttl\":0}",
        "{\"service\":\"s\",\"ttl\":2592000001}",
        "{\"service\":\"s\",\"keep\":\"1\"}",
        "{\"service\":\"s\",\"keep\":true}",
        "{\"service\":\"s\",\"workerId\":\"w\"}",
        "[\"service\"]"
    };
    for (size_t index = 0; index < sizeof refused / sizeof *refused; index++)
        if (s_agree (refused [index]))
            fail_msg ("accepted: %s", refused [index]);
}

//  Random opts from members titanic reads and members it passes on, some
//  broken: whatever either way reads, the other reads the same.
static void
test_random_submissions_read_the_same_both_ways (void **state)
{
    (void) state;
    const char *keys [] = { "\"service\"", "\"key\"",     "\"ttl\"",
                            "\"keep\"",    "\"timeout\"", "\"retry\"",
                            "\"attempt\"", "\"titanic\"", "\"workerId\"",
                            "\"x\"",       "\"y_2\"",     "\"service " };
    const char *values [] = {
        "\"bench\"", "\"\"", "\"a b/c\"", "\"q\\\"\"",  "\"\\u00e9\"", "1",
        "0",         "-1",   "60000",     "2592000001", "true",        "false",
        "null",      "{}",   "1.5",       "01"
    };
    unsigned seed = 4242;
    int accepted = 0;
    for (int round = 0; round < 20000; round++) {
        char text [512] = "{";
        seed = seed * 1103515245 + 12345;
        int members = (int) ((seed >> 16) % 6);
        bool has_service = false;
        for (int member = 0; member < members; member++) {
            if (member)
                strcat (text, ",");
            seed = seed * 1103515245 + 12345;
            size_t key = (seed >> 16) % (sizeof keys / sizeof *keys);
            seed = seed * 1103515245 + 12345;
            size_t value = (seed >> 16) % (sizeof values / sizeof *values);
            //  Mostly a good service first, so that many are accepted
            if (member == 0 && (seed >> 20) % 4) {
                key = 0;
                value = 0;
            }
            has_service = has_service || key == 0;
            strcat (text, keys [key]);
            strcat (text, ":");
            strcat (text, values [value]);
        }
        strcat (text, "}");
        if (s_agree (text))
            accepted++;
        (void) has_service;
    }
    assert_true (accepted > 1000);  //  the generator reaches both sides
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_usual_submissions_read_the_same_both_ways),
        cmocka_unit_test (test_random_submissions_read_the_same_both_ways),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
