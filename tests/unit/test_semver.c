/*  test_semver.c - versions and ranges of versioned services: the ranges
    users write (^, ~, x, comparators, ||) pick the versions npm's semver
    would; bad text is refused, never misread.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include "../../mesh/broker/semver.h"

static bool
s_match (const char *range_text, const char *version_text)
{
    pigato__range_t range;
    pigato__version_t version;
    assert_true (pigato__range_parse (range_text, strlen (range_text), &range));
    assert_true (
        pigato__version_parse (version_text, strlen (version_text), &version));
    return pigato__range_match (&range, &version);
}

static void
test_versions_parse_strictly (void **state)
{
    (void) state;
    pigato__version_t version;
    assert_true (pigato__version_parse ("1.2.3", 5, &version));
    assert_int_equal (version.major, 1);
    assert_int_equal (version.minor, 2);
    assert_int_equal (version.patch, 3);
    assert_true (pigato__version_parse ("0.0.0", 5, &version));
    assert_true (pigato__version_parse ("10.200.3000", 11, &version));
    const char *bad [] = { "",       "1",     "1.2",        "1.2.3.4",
                           "01.2.3", "1.2.x", "1.2.3-beta", "a.b.c",
                           "1..3",   "1.2.",  "-1.2.3",     "1234567890.1.1",
                           " 1.2.3" };
    for (size_t index = 0; index < sizeof bad / sizeof *bad; index++)
        assert_false (pigato__version_parse (bad [index], strlen (bad [index]),
                                             &version));
}

static void
test_ranges_match_like_npm_semver (void **state)
{
    (void) state;
    struct {
        const char *range, *version;
        bool match;
    } cases [] = {
        { "^1.2", "1.2.0", true },        { "^1.2", "1.9.9", true },
        { "^1.2", "2.0.0", false },       { "^1.2", "1.1.9", false },
        { "^1.2.3", "1.2.3", true },      { "^1.2.3", "1.2.2", false },
        { "^0.2.3", "0.2.9", true },      { "^0.2.3", "0.3.0", false },
        { "^0.0.3", "0.0.3", true },      { "^0.0.3", "0.0.4", false },
        { "~1.2.0", "1.2.9", true },      { "~1.2.0", "1.3.0", false },
        { "~1.2", "1.2.5", true },        { "~1", "1.9.0", true },
        { "~1", "2.0.0", false },         { "1.x", "1.0.0", true },
        { "1.x", "1.99.1", true },        { "1.x", "2.0.0", false },
        { "1.2.x", "1.2.7", true },       { "1.2.*", "1.3.0", false },
        { "1", "1.5.0", true },           { "1.2", "1.2.9", true },
        { "1.2", "1.3.0", false },        { "*", "0.0.1", true },
        { "x", "9.9.9", true },           { ">=1.2.0 <2", "1.2.0", true },
        { ">=1.2.0 <2", "1.99.0", true }, { ">=1.2.0 <2", "2.0.0", false },
        { ">=1.2.0 <2", "1.1.0", false }, { ">= 1.2.0 < 2", "1.5.0", true },
        { ">1.2.3", "1.2.3", false },     { ">1.2.3", "1.2.4", true },
        { ">1.2", "1.2.9", false },       { ">1.2", "1.3.0", true },
        { "<=1.2", "1.2.9", true },       { "<=1.2", "1.3.0", false },
        { "<1.2.3", "1.2.2", true },      { "=1.2.3", "1.2.3", true },
        { "1.2.3", "1.2.3", true },       { "1.2.3", "1.2.4", false },
        { "1.x || 3.x", "3.1.0", true },  { "1.x || 3.x", "2.1.0", false },
        { "^1 || ^3", "1.0.0", true }
    };
    for (size_t index = 0; index < sizeof cases / sizeof *cases; index++)
        if (s_match (cases [index].range, cases [index].version)
            != cases [index].match)
            fail_msg ("%s against %s: expected %s", cases [index].version,
                      cases [index].range,
                      cases [index].match ? "match" : "no match");
}

static void
test_bad_ranges_are_refused (void **state)
{
    (void) state;
    pigato__range_t range;
    const char *bad [] = { "",      " ",          "||",  "1 ||",    "|| 1",
                           "^",     "~x.1",       ">=",  "1.2.3.4", "abc",
                           "^01.2", "1.2.3-beta", "=>1", "1 | 2" };
    for (size_t index = 0; index < sizeof bad / sizeof *bad; index++)
        if (pigato__range_parse (bad [index], strlen (bad [index]), &range))
            fail_msg ("range '%s' was accepted", bad [index]);
    //  Too many comparators for the fixed table: refused, not overflowed
    const char *many =
        ">=1 <2 >=1 <2 >=1 <2 >=1 <2 >=1 <2 >=1 <2 >=1 <2 >=1 <2 >=1";
    assert_false (pigato__range_parse (many, strlen (many), &range));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_versions_parse_strictly),
        cmocka_unit_test (test_ranges_match_like_npm_semver),
        cmocka_unit_test (test_bad_ranges_are_refused)
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
