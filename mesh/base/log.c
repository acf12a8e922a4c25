/*  =========================================================================
    log.c - the process-wide log callback. The library never prints by
    itself; daemons install pigato_log_stderr or their own callback.

    Every line is written here, in one of two formats: key=value text, or
    the same fields as one JSON object per line (pigato_log_set_format),
    for log shippers that would otherwise parse the text with a regex.
    =========================================================================
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

int pigato__log_level = -1;            //  -1 = logging off
static pigato_log_fn *s_log_callback;  //  where lines go
static void *s_log_arg;                //  callback's argument
static int s_log_format;               //  pigato_log_format_t

static const char *s_level_names [] = { "error", "warning", "info", "debug" };

void
pigato_log_set (int level, pigato_log_fn *callback, void *arg)
{
    s_log_callback = callback;
    s_log_arg = arg;
    pigato__log_level = callback ? level : -1;
}

int
pigato_log_level_parse (const char *name)
{
    if (!name)
        return -1;
    for (int level = 0; level < 4; level++)
        if (streq (name, s_level_names [level]))
            return level;
    if (streq (name, "warn"))
        return PIGATO_LOG_WARNING;
    return -1;
}

int
pigato_log_set_format (int format)
{
    if (format != PIGATO_LOG_TEXT && format != PIGATO_LOG_JSON)
        return PIGATO_E_INVALID;
    s_log_format = format;
    return 0;
}

int
pigato_log_format_parse (const char *name)
{
    if (name && streq (name, "text"))
        return PIGATO_LOG_TEXT;
    if (name && streq (name, "json"))
        return PIGATO_LOG_JSON;
    return -1;
}

//  --------------------------------------------------------------------------
//  The JSON format. A line is read as the text format writes it: fields
//  key=value apart by spaces, a value bare (pigato__printable: no space,
//  '=', '"' or '\\' in it) or in double quotes (pigato__printable_quoted:
//  no '"' inside); \xNN stands for a byte either way. Whatever is not
//  such a field is kept, in order, in "msg": nothing of a line is lost.

typedef struct {
    char *out;    //  the object being written
    size_t used;  //  bytes in it
    size_t size;  //  room (always enough: see s_log_json)
} json_out_t;

//  Appends bytes; what would not fit is dropped (never happens with the
//  room s_log_json is given, but a miscount must not write past it).
static void
s_put (json_out_t *self, const char *text, size_t size)
{
    if (self->used + size + 2 > self->size)
        return;  //  keep room for the closing "}\n"
    memcpy (self->out + self->used, text, size);
    self->used += size;
}

static int
s_hex_value (char c)
{
    return c >= '0' && c <= '9' ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

//  Writes text as the inside of a JSON string: \xNN of a printable ASCII
//  character becomes the character; other \xNN and bytes outside ASCII
//  stay written \xNN (JSON has no bytes, and the text format wrote them
//  so); '"', '\\' and control characters get JSON's escapes.
static void
s_put_json_text (json_out_t *self, const char *text, size_t size)
{
    static const char hex [] = "0123456789abcdef";
    for (size_t index = 0; index < size; index++) {
        unsigned char byte = (unsigned char) text [index];
        if (byte == '\\' && index + 3 < size && text [index + 1] == 'x'
            && s_hex_value (text [index + 2]) >= 0
            && s_hex_value (text [index + 3]) >= 0) {
            int value = s_hex_value (text [index + 2]) * 16
                      + s_hex_value (text [index + 3]);
            if (value >= 0x20 && value < 0x7f) {
                byte = (unsigned char) value;
                index += 3;
            }
        }
        if (byte == '"' || byte == '\\') {
            char escaped [2] = { '\\', (char) byte };
            s_put (self, escaped, 2);
        }
        else if (byte >= 0x80) {
            char escaped [5] = { '\\', '\\', 'x', hex [byte >> 4],
                                 hex [byte & 15] };
            s_put (self, escaped, 5);
        }
        else if (byte < 0x20 || byte == 0x7f) {
            char escaped [6] = { '\\',           'u', '0', '0', hex [byte >> 4],
                                 hex [byte & 15] };
            s_put (self, escaped, 6);
        }
        else
            s_put (self, (const char *) &byte, 1);
    }
}

//  A key the text format can write: letters, digits, '_', '-', '.'.
static bool
s_key_valid (const char *key, size_t size)
{
    if (size == 0 || size > 64)
        return false;
    for (size_t index = 0; index < size; index++) {
        char c = key [index];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

//  Fields tracked for duplicates: a line has at most ~1024 bytes, so far
//  fewer
#define JSON_KEYS_MAX 128

typedef struct {
    const char *name;
    size_t size;
} json_key_t;

//  How many earlier keys (ts, level and msg included) have this name.
static int
s_key_uses (const json_key_t *keys, size_t count, const char *name, size_t size)
{
    int uses = 0;
    for (size_t index = 0; index < count; index++)
        if (keys [index].size == size
            && memcmp (keys [index].name, name, size) == 0)
            uses++;
    return uses;
}

//  Writes one line as a JSON object with its newline into out, of
//  out_size bytes: 8 times the line and 256 bytes more is enough (a byte
//  of the line takes at most 6 in JSON, a field's quotes and suffix fit
//  in the bytes of its '=' and the space before it and 2 more). Returns
//  the bytes written.
static size_t
s_log_json (char *out, size_t out_size, const char *stamp, const char *level,
            const char *line)
{
    json_out_t self = { out, 0, out_size };
    json_key_t keys [JSON_KEYS_MAX] = { { "ts", 2 },
                                        { "level", 5 },
                                        { "msg", 3 } };
    size_t key_count = 3;
    s_put (&self, "{\"ts\":\"", 7);
    s_put_json_text (&self, stamp, strlen (stamp));
    s_put (&self, "\",\"level\":\"", 11);
    s_put_json_text (&self, level, strlen (level));
    s_put (&self, "\"", 1);
    //  Words that are not fields, gathered for "msg" (in place: each is
    //  remembered by its place in the line)
    const char *words [JSON_KEYS_MAX];
    size_t word_sizes [JSON_KEYS_MAX], word_count = 0;
    const char *at = line;
    while (*at) {
        while (*at == ' ')
            at++;
        if (!*at)
            break;
        const char *start = at, *equals = NULL;
        while (*at && *at != ' ' && *at != '=')
            at++;
        if (*at == '=')
            equals = at;
        const char *value = NULL, *end = NULL;
        if (equals && s_key_valid (start, (size_t) (equals - start))) {
            value = equals + 1;
            if (*value == '"' && strchr (value + 1, '"')) {
                end = strchr (value + 1, '"');
                at = end + 1;
                value++;
            }
            else {
                end = value + strcspn (value, " ");
                at = end;
            }
        }
        else
            at += strcspn (at, " ");
        if (!value || (*at && *at != ' ')) {
            //  Not a field (or a quoted value glued to what follows)
            at += strcspn (at, " ");
            if (word_count < JSON_KEYS_MAX) {
                words [word_count] = start;
                word_sizes [word_count++] = (size_t) (at - start);
            }
            continue;
        }
        size_t key_size = (size_t) (equals - start);
        int uses = s_key_uses (keys, key_count, start, key_size);
        if (key_count < JSON_KEYS_MAX)
            keys [key_count++] = (json_key_t) { start, key_size };
        s_put (&self, ",\"", 2);
        s_put_json_text (&self, start, key_size);
        if (uses) {
            char suffix [16];
            s_put (&self, suffix,
                   (size_t) snprintf (suffix, sizeof suffix, "_%d", uses + 1));
        }
        s_put (&self, "\":\"", 3);
        s_put_json_text (&self, value, (size_t) (end - value));
        s_put (&self, "\"", 1);
    }
    if (word_count) {
        s_put (&self, ",\"msg\":\"", 8);
        for (size_t index = 0; index < word_count; index++) {
            if (index)
                s_put (&self, " ", 1);
            s_put_json_text (&self, words [index], word_sizes [index]);
        }
        s_put (&self, "\"", 1);
    }
    memcpy (self.out + self.used, "}\n", 2);  //  s_put kept room for it
    return self.used + 2;
}

void
pigato_log_stderr (int level, const char *line, void *arg)
{
    (void) arg;
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);
    char stamp [48];
    size_t used = strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (stamp + used, sizeof stamp - used, ".%03ldZ",
              now.tv_nsec / 1000000L);
    const char *name = level >= 0 && level < 4 ? s_level_names [level] : "?";
    line = line ? line : "";
    if (s_log_format == PIGATO_LOG_JSON) {
        //  One write of the whole object: lines of threads and of other
        //  processes on the same stderr never interleave within a line
        size_t size = 8 * strlen (line) + 256;
        char buffer [8 * 1024 + 256];
        char *json = size <= sizeof buffer ? buffer : (char *) malloc (size);
        if (json) {
            fwrite (json, 1, s_log_json (json, size, stamp, name, line),
                    stderr);
            if (json != buffer)
                free (json);
        }
        fflush (stderr);
        return;
    }
    fprintf (stderr, "%s %s %s\n", stamp, name, line);
    fflush (stderr);
}

void
pigato__log_emit (int level, const char *format, ...)
{
    if (!s_log_callback)
        return;
    char line [1024];
    va_list args;
    va_start (args, format);
    vsnprintf (line, sizeof line, format, args);
    va_end (args);
    //  One event, one line, whatever a call site forgot to escape: a
    //  control byte (a newline in a file name) becomes \xNN here, so no
    //  peer or file can forge log lines. Call sites still escape the
    //  values they print (pigato__printable), or a space could forge a
    //  key=value field within the line.
    size_t length = strcspn (line, "\x01\x02\x03\x04\x05\x06\x07\x08\x09"
                                   "\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12"
                                   "\x13\x14\x15\x16\x17\x18\x19\x1a\x1b"
                                   "\x1c\x1d\x1e\x1f\x7f");
    if (line [length]) {
        char escaped [4 * sizeof line];
        size_t used = 0;
        for (const char *at = line; *at; at++) {
            unsigned char byte = (unsigned char) *at;
            if (byte < 0x20 || byte == 0x7f)
                used += (size_t) snprintf (
                    escaped + used, sizeof escaped - used, "\\x%02x", byte);
            else
                escaped [used++] = (char) byte;
        }
        escaped [used] = 0;
        s_log_callback (level, escaped, s_log_arg);
        return;
    }
    s_log_callback (level, line, s_log_arg);
}
