/*  test_log.c - pigato_log_stderr in the JSON format: every line a JSON
    object a real parser (jansson) reads, with the fields of the key=value
    line, whatever bytes the line holds.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>
#include "pigato.h"

//  Runs pigato_log_stderr on line with stderr sent to a temporary file;
//  returns what it wrote (caller frees).
static char *
s_capture (int level, const char *line)
{
    fflush (stderr);
    int saved = dup (2);
    FILE *capture = tmpfile ();
    assert_non_null (capture);
    dup2 (fileno (capture), 2);
    pigato_log_stderr (level, line, NULL);
    fflush (stderr);
    dup2 (saved, 2);
    close (saved);
    long size = ftell (capture);
    char *text = (char *) calloc (1, (size_t) size + 1);
    rewind (capture);
    assert_int_equal (fread (text, 1, (size_t) size, capture), (size_t) size);
    fclose (capture);
    return text;
}

//  The line in JSON, parsed: exactly one object, one line.
static json_t *
s_json_line (int level, const char *line)
{
    assert_int_equal (pigato_log_set_format (PIGATO_LOG_JSON), 0);
    char *text = s_capture (level, line);
    pigato_log_set_format (PIGATO_LOG_TEXT);
    size_t size = strlen (text);
    assert_true (size > 0);
    assert_int_equal (text [size - 1], '\n');
    assert_null (memchr (text, '\n', size - 1));
    json_error_t error;
    json_t *object = json_loads (text, 0, &error);
    if (!object)
        fail_msg ("not JSON: %s (%s)", text, error.text);
    assert_true (json_is_object (object));
    free (text);
    return object;
}

static const char *
s_member (json_t *object, const char *name)
{
    json_t *value = json_object_get (object, name);
    return json_is_string (value) ? json_string_value (value) : NULL;
}

static void
test_fields_become_members_in_order (void **state)
{
    (void) state;
    json_t *object = s_json_line (
        PIGATO_LOG_WARNING,
        "event=zap_deny address=127.0.0.1:4000 key=0123456789abcdef "
        "reason=\"no such key, sorry\" count=3");
    assert_string_equal (s_member (object, "level"), "warning");
    assert_string_equal (s_member (object, "event"), "zap_deny");
    assert_string_equal (s_member (object, "address"), "127.0.0.1:4000");
    assert_string_equal (s_member (object, "key"), "0123456789abcdef");
    assert_string_equal (s_member (object, "reason"), "no such key, sorry");
    assert_string_equal (s_member (object, "count"), "3");
    //  "2024-05-01T12:00:00.000Z"
    const char *stamp = s_member (object, "ts");
    assert_non_null (stamp);
    assert_int_equal (strlen (stamp), 24);
    assert_int_equal (stamp [23], 'Z');
    const char *order [] = { "ts",  "level",  "event", "address",
                             "key", "reason", "count" };
    size_t index = 0;
    const char *name;
    json_t *value;
    json_object_foreach (object, name, value)
    {
        assert_true (index < 7);
        assert_string_equal (name, order [index++]);
    }
    json_decref (object);
}

static void
test_escapes_are_json_escapes (void **state)
{
    (void) state;
    //  What pigato__printable writes for a routing id with a space, a
    //  quote, a backslash, a newline and a byte outside ASCII, and raw
    //  bytes from a caller that escaped nothing
    json_t *object = s_json_line (
        PIGATO_LOG_INFO, "event=x id=a\\x20b\\x22c\\x5cd\\x0ae\\xff "
                         "raw=\x01tab\there quote=\"say \\x22hi\\x22\"");
    assert_string_equal (s_member (object, "id"), "a b\"c\\d\\x0ae\\xff");
    assert_string_equal (s_member (object, "raw"), "\x01tab\there");
    assert_string_equal (s_member (object, "quote"), "say \"hi\"");
    json_decref (object);
}

static void
test_words_go_to_msg_and_names_stay_unique (void **state)
{
    (void) state;
    json_t *object = s_json_line (
        PIGATO_LOG_ERROR,
        "pigato-broker: cannot bind event=a level=b event=c =d e= msg=f");
    assert_string_equal (s_member (object, "level"), "error");
    assert_string_equal (s_member (object, "event"), "a");
    assert_string_equal (s_member (object, "level_2"), "b");
    assert_string_equal (s_member (object, "event_2"), "c");
    assert_string_equal (s_member (object, "e"), "");
    assert_string_equal (s_member (object, "msg_2"), "f");
    assert_string_equal (s_member (object, "msg"),
                         "pigato-broker: cannot bind =d");
    json_decref (object);
}

static void
test_long_and_hostile_lines_stay_one_object (void **state)
{
    (void) state;
    //  Every byte value, fields glued together, unbalanced quotes, and a
    //  line longer than the stack buffer
    char line [20000];
    size_t used = 0;
    for (int round = 0; used < sizeof line - 600; round++) {
        used += (size_t) snprintf (line + used, sizeof line - used,
                                   "k%d=\"v a= x=\"\"y \" =", round);
        for (int byte = 1; byte < 256; byte++)
            line [used++] = (char) byte;
    }
    line [used] = 0;
    json_t *object = s_json_line (PIGATO_LOG_DEBUG, line);
    //  A quoted value glued to more text is no field: kept in msg
    assert_null (s_member (object, "k0"));
    const char *msg = s_member (object, "msg");
    assert_non_null (msg);
    assert_int_equal (strncmp (msg, "k0=\"v a= x=\"\"y", 14), 0);
    json_decref (object);
    //  Fields only, the most a line can hold
    used = 0;
    while (used < 1000)
        used += (size_t) snprintf (line + used, sizeof line - used, "a= ");
    json_decref (s_json_line (PIGATO_LOG_INFO, line));
}

static void
test_format_names (void **state)
{
    (void) state;
    assert_int_equal (pigato_log_format_parse ("json"), PIGATO_LOG_JSON);
    assert_int_equal (pigato_log_format_parse ("text"), PIGATO_LOG_TEXT);
    assert_int_equal (pigato_log_format_parse ("xml"), -1);
    assert_int_equal (pigato_log_format_parse (NULL), -1);
    assert_int_equal (pigato_log_set_format (7), PIGATO_E_INVALID);
    //  The text format is what it was
    char *text = s_capture (PIGATO_LOG_INFO, "event=ready a=b");
    assert_non_null (strstr (text, "Z info event=ready a=b\n"));
    free (text);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_fields_become_members_in_order),
        cmocka_unit_test (test_escapes_are_json_escapes),
        cmocka_unit_test (test_words_go_to_msg_and_names_stay_unique),
        cmocka_unit_test (test_long_and_hostile_lines_stay_one_object),
        cmocka_unit_test (test_format_names),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
