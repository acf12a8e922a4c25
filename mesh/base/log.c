/*  =========================================================================
    log.c - the process-wide log callback. The library never prints by
    itself; daemons install pigato_log_stderr or their own callback.
    =========================================================================
*/
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "internal.h"

int pigato__log_level = -1;            //  -1 = logging off
static pigato_log_fn *s_log_callback;  //  where lines go
static void *s_log_arg;                //  callback's argument

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

void
pigato_log_stderr (int level, const char *line, void *arg)
{
    (void) arg;
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r (&now.tv_sec, &tm);
    char stamp [32];
    strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    const char *name = level >= 0 && level < 4 ? s_level_names [level] : "?";
    fprintf (stderr, "%s.%03ldZ %s %s\n", stamp, now.tv_nsec / 1000000L, name,
             line);
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
