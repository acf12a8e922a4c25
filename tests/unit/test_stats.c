/*  test_stats.c - the counters the core keeps for operators (stats.h):
    latencies land in the bucket of the first bound they do not pass,
    error texts map to their outcome, and the tables stay bounded however
    many names peers bring.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "../../mesh/broker/stats.h"

//  The bucket of a latency, the slow and obvious way.
static size_t
s_bucket_by_scan (int64_t latency_us)
{
    size_t bucket = 0;
    while (bucket < PIGATO__LATENCY_BUCKETS
           && latency_us > pigato__latency_bounds_us [bucket])
        bucket++;
    return bucket;
}

//  The bucket pigato__stats_finish counted a latency in.
static size_t
s_bucket_counted (pigato__stats_t *stats, int64_t latency_us)
{
    pigato__service_stats_t *record = stats->other_service;
    int64_t before [PIGATO__LATENCY_BUCKETS + 1];
    memcpy (before, record->latency, sizeof before);
    pigato__stats_finish (stats, NULL, PIGATO__OUTCOME_OK, 0, latency_us);
    for (size_t bucket = 0; bucket <= PIGATO__LATENCY_BUCKETS; bucket++)
        if (record->latency [bucket] != before [bucket])
            return bucket;
    fail_msg ("latency %lld counted nowhere", (long long) latency_us);
    return 0;
}

static void
test_latency_buckets_match_their_bounds (void **state)
{
    (void) state;
    pigato__stats_t *stats = pigato__stats_new ();
    assert_non_null (stats);
    int64_t count = 0, sum = 0;
    //  Every bound, each side of it, powers of two and their neighbours
    for (size_t index = 0; index < PIGATO__LATENCY_BUCKETS; index++)
        for (int64_t delta = -1; delta <= 1; delta++) {
            int64_t latency = pigato__latency_bounds_us [index] + delta;
            assert_int_equal (s_bucket_counted (stats, latency),
                              s_bucket_by_scan (latency));
            count++;
            sum += latency;
        }
    //  (up to a year: the sum of every latency stays in range)
    for (int power = 0; power < 45; power++)
        for (int64_t delta = -1; delta <= 1; delta++) {
            int64_t latency = ((int64_t) 1 << power) + delta;
            assert_int_equal (s_bucket_counted (stats, latency),
                              s_bucket_by_scan (latency));
            count++;
            sum += latency;
        }
    //  A clock that went back counts as 0
    assert_int_equal (s_bucket_counted (stats, -5), 0);
    count++;
    int64_t total = 0;
    for (size_t bucket = 0; bucket <= PIGATO__LATENCY_BUCKETS; bucket++)
        total += stats->other_service->latency [bucket];
    assert_int_equal (total, count);
    assert_int_equal (stats->other_service->latency_sum_us, sum);
    assert_int_equal (stats->other_service->outcomes [PIGATO__OUTCOME_OK],
                      count);
    //  Only final replies have a latency
    pigato__stats_finish (stats, NULL, PIGATO__OUTCOME_TIMEOUT, 10, 5000);
    assert_int_equal (stats->other_service->latency_sum_us, sum);
    assert_int_equal (stats->other_service->request_bytes, 10);
    pigato__stats_destroy (&stats);
    assert_null (stats);
    //  The largest latencies go past the last bound
    stats = pigato__stats_new ();
    assert_int_equal (s_bucket_counted (stats, INT64_MAX),
                      PIGATO__LATENCY_BUCKETS);
    pigato__stats_destroy (&stats);
}

static void
test_error_texts_map_to_outcomes (void **state)
{
    (void) state;
    struct {
        const char *text;
        pigato__outcome_t outcome;
    } cases [] = {
        { "E_WORKER_LOST the worker went away", PIGATO__OUTCOME_WORKER_LOST },
        { "E_REJECTED the request was rejected", PIGATO__OUTCOME_REJECTED },
        { "E_ACCESS_DENIED echo", PIGATO__OUTCOME_DENIED },
        { "E_QUOTA identity alice may hold", PIGATO__OUTCOME_QUOTA },
        { "E_OVERLOADED", PIGATO__OUTCOME_OVERLOADED },
        { "E_WORKER_NOT_FOUND no worker", PIGATO__OUTCOME_FAILED },
        { "E_INVALID_OPTS request opts", PIGATO__OUTCOME_FAILED },
        { "E_QUOTAS is another word", PIGATO__OUTCOME_FAILED },
        { "", PIGATO__OUTCOME_FAILED },
        { NULL, PIGATO__OUTCOME_FAILED },
    };
    for (size_t index = 0; index < sizeof cases / sizeof cases [0]; index++)
        assert_int_equal (pigato__stats_outcome_of (cases [index].text),
                          cases [index].outcome);
    assert_string_equal (pigato__stats_outcome_name (PIGATO__OUTCOME_OK), "ok");
    assert_string_equal (
        pigato__stats_outcome_name (PIGATO__OUTCOME_WORKER_LOST),
        "worker_lost");
    assert_string_equal (pigato__stats_outcome_name (PIGATO__OUTCOME_COUNT),
                         "?");
}

static void
test_tables_are_bounded (void **state)
{
    (void) state;
    pigato__stats_t *stats = pigato__stats_new ();
    char name [32];
    for (int index = 0; index < PIGATO__STATS_SERVICES_MAX; index++) {
        snprintf (name, sizeof name, "svc-%04d", index);
        assert_non_null (pigato__stats_service_make (stats, name));
    }
    //  Full: a new name has no record (its requests count as other), an
    //  old one still has its own
    assert_null (pigato__stats_service_make (stats, "one-too-many"));
    assert_null (pigato__stats_service (stats, "one-too-many"));
    assert_non_null (pigato__stats_service_make (stats, "svc-0007"));
    assert_ptr_equal (pigato__stats_service_make (stats, "svc-0007"),
                      pigato__stats_service (stats, "svc-0007"));

    for (int index = 0; index < PIGATO__STATS_IDENTITIES_MAX; index++) {
        snprintf (name, sizeof name, "id-%04d", index);
        assert_ptr_not_equal (pigato__stats_identity (stats, name),
                              &stats->other_identity);
    }
    assert_ptr_equal (pigato__stats_identity (stats, "late-comer"),
                      &stats->other_identity);
    assert_ptr_equal (pigato__stats_identity (stats, ""),
                      &stats->other_identity);
    assert_ptr_equal (pigato__stats_identity (stats, NULL),
                      &stats->other_identity);

    //  Denials: the identity's, and for a call the service's
    pigato__stats_denied (stats, "id-0001", "svc-0002");
    pigato__stats_denied (stats, "id-0001", NULL);
    pigato__stats_denied (stats, "late-comer", "unknown");
    assert_int_equal (pigato__stats_identity (stats, "id-0001")->denials, 2);
    assert_int_equal (stats->other_identity.denials, 1);
    assert_int_equal (pigato__stats_service (stats, "svc-0002")
                          ->outcomes [PIGATO__OUTCOME_DENIED],
                      1);
    assert_int_equal (stats->other_service->outcomes [PIGATO__OUTCOME_DENIED],
                      1);

    size_t count;
    pigato__service_stats_t **services = pigato__stats_services_sorted (stats,
                                                                        &count);
    assert_int_equal (count, PIGATO__STATS_SERVICES_MAX);
    for (size_t index = 1; index < count; index++)
        assert_true (strcmp (services [index - 1]->name, services [index]->name)
                     < 0);
    free (services);
    pigato__identity_stats_t **identities = pigato__stats_identities_sorted (
        stats, &count);
    assert_int_equal (count, PIGATO__STATS_IDENTITIES_MAX);
    assert_string_equal (identities [0]->name, "id-0000");
    free (identities);
    pigato__stats_destroy (&stats);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_latency_buckets_match_their_bounds),
        cmocka_unit_test (test_error_texts_map_to_outcomes),
        cmocka_unit_test (test_tables_are_bounded),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
