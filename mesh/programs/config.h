/*  =========================================================================
    config.h - pigato-broker --config FILE: the daemon's long options, one
    per line, read into the same getopt_long loop as the command line
    (broker_main.c), the file's first so that the command line overrides
    it. The format (docs/pigato-broker.1, CONFIGURATION FILE):

        # a comment
        bind        tcp://0.0.0.0:5555  # a comment after a blank
        key         /etc/pigato/broker.key_secret
        allow-any                      # a flag: the name alone, or yes/no
        log-format  json

    =========================================================================
*/
#ifndef PIGATO_CONFIG_H_INCLUDED
#define PIGATO_CONFIG_H_INCLUDED

#include <getopt.h>
#include <stdio.h>

#define PIGATO__CONFIG_BYTES_MAX (1024 * 1024)  //  a larger file is refused
#define PIGATO__CONFIG_LINE_MAX  4096           //  bytes in one line

//  A configuration file read into options.
typedef struct {
    const char *path;  //  the file (borrowed)
    char **options;    //  "--name=value" or "--name", in file order
    int *lines;        //  the line each option came from
    int count;         //  options
} pigato__config_t;

//  Reads path into self. known lists the program's long options (the
//  getopt_long table, NULL-terminated); a name in not_here (NULL-terminated)
//  is refused (command-line only: config, help, ...), a name in repeatable
//  may appear on several lines, any other name once. Every problem is
//  printed to errors as "PATH:LINE: message" (or "PATH: message" for the
//  file as a whole: unreadable, too large, writable by others). Returns
//  the number of problems (0: self holds the options; free them with
//  pigato__config_free either way).
int pigato__config_read (pigato__config_t *self, const char *path,
                         const struct option *known,
                         const char *const *not_here,
                         const char *const *repeatable, FILE *errors);

//  Frees what pigato__config_read made. Idempotent.
void pigato__config_free (pigato__config_t *self);

//  The argument vector getopt_long reads: argv [0], the file's options,
//  then argv [1..argc-1]; NULL-terminated, its count in *argc_out. The
//  strings are borrowed (self's and argv's); free the array alone. NULL if
//  out of memory. An option at index i of it came from the file when
//  1 <= i <= self->count, from line self->lines [i - 1].
char **pigato__config_argv (const pigato__config_t *self, int argc, char **argv,
                            int *argc_out);

#endif
