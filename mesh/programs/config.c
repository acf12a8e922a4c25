/*  =========================================================================
    config.c - pigato-broker --config FILE (config.h): the file's lines
    become "--name=value" options for the daemon's getopt_long loop.

    Only the form is checked here: a known name, a value where the option
    takes one, no value where it does not, each name once unless it
    repeats (bind). The values are checked where the command line's are
    (broker_main.c), which names the file and line in its messages.
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "config.h"

static void __attribute__ ((format (printf, 4, 5)))
s_problem (FILE *errors, const char *path, int line, const char *format, ...)
{
    if (line > 0)
        fprintf (errors, "%s:%d: ", path, line);
    else
        fprintf (errors, "%s: ", path);
    va_list args;
    va_start (args, format);
    vfprintf (errors, format, args);
    va_end (args);
    fputc ('\n', errors);
}

static bool
s_listed (const char *const *names, const char *name)
{
    for (; names && *names; names++)
        if (strcmp (*names, name) == 0)
            return true;
    return false;
}

static const struct option *
s_known (const struct option *known, const char *name)
{
    for (; known->name; known++)
        if (strcmp (known->name, name) == 0)
            return known;
    return NULL;
}

//  Reads the whole file through one descriptor (a FIFO must not block
//  us; a huge file is refused). Returns its text (caller frees) or NULL
//  having said why.
static char *
s_slurp (const char *path, FILE *errors)
{
    int fd = open (path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        s_problem (errors, path, 0, "cannot read: %s", strerror (errno));
        return NULL;
    }
    struct stat info;
    char *text = NULL;
    if (fstat (fd, &info) != 0 || !S_ISREG (info.st_mode))
        s_problem (errors, path, 0, "not a regular file");
    else if (info.st_size > PIGATO__CONFIG_BYTES_MAX)
        s_problem (errors, path, 0,
                   "larger than %d bytes: not a broker "
                   "configuration",
                   PIGATO__CONFIG_BYTES_MAX);
    else if (info.st_mode & S_IWOTH)
        //  Whoever may write it chooses the ACL and the key the broker
        //  uses
        s_problem (errors, path, 0,
                   "writable by others (mode %04o): fix with: chmod o-w %s",
                   (unsigned) (info.st_mode & 07777), path);
    else if ((text = (char *) malloc ((size_t) info.st_size + 1))) {
        size_t size = 0;
        while (size < (size_t) info.st_size) {
            ssize_t got = read (fd, text + size, (size_t) info.st_size - size);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            size += (size_t) got;
        }
        text [size] = 0;
        if (memchr (text, 0, size)) {
            s_problem (errors, path, 0, "holds a NUL byte: not a text file");
            free (text);
            text = NULL;
        }
    }
    else
        s_problem (errors, path, 0, "out of memory");
    close (fd);
    return text;
}

static bool
s_blank (char c)
{
    return c == ' ' || c == '\t';
}

//  Adds one option; false if out of memory.
static bool
s_add (pigato__config_t *self, char *option, int line)
{
    char **options = (char **) realloc (
        self->options, (size_t) (self->count + 1) * sizeof (char *));
    if (!options)
        return false;
    self->options = options;
    int *lines = (int *) realloc (self->lines,
                                  (size_t) (self->count + 1) * sizeof (int));
    if (!lines)
        return false;
    self->lines = lines;
    self->options [self->count] = option;
    self->lines [self->count++] = line;
    return true;
}

//  One line, without its newline: a setting, a comment or nothing.
//  Returns the number of problems (0 or 1).
static int
s_line (pigato__config_t *self, char *text, int line,
        const struct option *known, const char *const *not_here,
        const char *const *repeatable, FILE *errors)
{
    const char *path = self->path;
    size_t length = strlen (text);
    if (length && text [length - 1] == '\r')
        text [--length] = 0;  //  a file written on Windows
    if (length > PIGATO__CONFIG_LINE_MAX) {
        s_problem (errors, path, line, "line longer than %d bytes",
                   PIGATO__CONFIG_LINE_MAX);
        return 1;
    }
    while (s_blank (*text))
        text++;
    //  A comment: the whole line, or from a '#' after a blank
    for (char *at = text; *at; at++)
        if (*at == '#' && (at == text || s_blank (at [-1]))) {
            *at = 0;
            break;
        }
    length = strlen (text);
    while (length && s_blank (text [length - 1]))
        text [--length] = 0;
    if (length == 0)
        return 0;
    for (char *at = text; *at; at++)
        if ((unsigned char) *at < 0x20 && *at != '\t') {
            s_problem (errors, path, line, "control character (0x%02x)",
                       (unsigned) (unsigned char) *at);
            return 1;
        }
    char *name = text, *value = text + strcspn (text, " \t");
    if (*value) {
        *value++ = 0;
        while (s_blank (*value))
            value++;
    }
    size_t value_length = strlen (value);
    if (value_length >= 2 && value [0] == '"'
        && value [value_length - 1] == '"') {
        value [value_length - 1] = 0;  //  "a value with spaces"
        value++;
    }
    if (strncmp (name, "--", 2) == 0) {
        s_problem (errors, path, line,
                   "write the name without dashes ('%s', not '%s')", name + 2,
                   name);
        return 1;
    }
    if (strchr (name, '=')) {
        s_problem (errors, path, line,
                   "write 'name value', not 'name=value' ('%.*s')",
                   (int) strcspn (name, "="), name);
        return 1;
    }
    const struct option *option = s_known (known, name);
    if (!option) {
        s_problem (errors, path, line, "unknown setting '%s'", name);
        return 1;
    }
    if (s_listed (not_here, name)) {
        s_problem (errors, path, line,
                   "'%s' belongs on the command line, not in a "
                   "configuration file",
                   name);
        return 1;
    }
    if (!s_listed (repeatable, name))
        for (int index = 0; index < self->count; index++) {
            const char *earlier = self->options [index] + 2;
            size_t size = strlen (name);
            if (strncmp (earlier, name, size) == 0
                && (earlier [size] == '=' || earlier [size] == 0)) {
                s_problem (errors, path, line,
                           "'%s' is set again (line %d set it first)", name,
                           self->lines [index]);
                return 1;
            }
        }
    char *result = NULL;
    if (option->has_arg == no_argument) {
        if (*value == 0 || strcmp (value, "yes") == 0
            || strcmp (value, "true") == 0)
            result = (char *) malloc (strlen (name) + 3);
        else if (strcmp (value, "no") == 0 || strcmp (value, "false") == 0)
            return 0;  //  off: as if absent
        else {
            s_problem (errors, path, line,
                       "'%s' is a flag: the name alone, or '%s yes' or "
                       "'%s no', not '%s'",
                       name, name, name, value);
            return 1;
        }
        if (result)
            sprintf (result, "--%s", name);
    }
    else {
        if (*value == 0) {
            s_problem (errors, path, line, "'%s' needs a value", name);
            return 1;
        }
        result = (char *) malloc (strlen (name) + strlen (value) + 4);
        if (result)
            sprintf (result, "--%s=%s", name, value);
    }
    if (!result || !s_add (self, result, line)) {
        free (result);
        s_problem (errors, path, line, "out of memory");
        return 1;
    }
    return 0;
}

int
pigato__config_read (pigato__config_t *self, const char *path,
                     const struct option *known, const char *const *not_here,
                     const char *const *repeatable, FILE *errors)
{
    memset (self, 0, sizeof *self);
    self->path = path;
    char *text = s_slurp (path, errors);
    if (!text)
        return 1;
    int problems = 0, line = 0;
    char *next = text;
    while (next) {
        char *start = next;
        next = strchr (start, '\n');
        if (next)
            *next++ = 0;
        else if (*start == 0)
            break;  //  the end of a file that ends with a newline
        problems += s_line (self, start, ++line, known, not_here, repeatable,
                            errors);
    }
    free (text);
    return problems;
}

void
pigato__config_free (pigato__config_t *self)
{
    for (int index = 0; index < self->count; index++)
        free (self->options [index]);
    free (self->options);
    free (self->lines);
    self->options = NULL;
    self->lines = NULL;
    self->count = 0;
}

char **
pigato__config_argv (const pigato__config_t *self, int argc, char **argv,
                     int *argc_out)
{
    int count = argc + self->count;
    char **merged = (char **) calloc ((size_t) count + 1, sizeof (char *));
    if (!merged)
        return NULL;
    merged [0] = argv [0];
    for (int index = 0; index < self->count; index++)
        merged [1 + index] = self->options [index];
    for (int index = 1; index < argc; index++)
        merged [self->count + index] = argv [index];
    *argc_out = count;
    return merged;
}
