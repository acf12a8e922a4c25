/*  =========================================================================
    proc.h - what the load generators read about the server under test
    from /proc: CPU time (utime + stime) and memory (VmHWM, VmRSS).
    =========================================================================
*/
#ifndef PIGATO_BENCH_PROC_H
#define PIGATO_BENCH_PROC_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

//  utime + stime of a process in seconds; -1 if it is gone.
static inline double
bench_process_cpu_seconds (long pid)
{
    char path [64], line [1024];
    snprintf (path, sizeof path, "/proc/%ld/stat", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    size_t size = fread (line, 1, sizeof line - 1, file);
    fclose (file);
    line [size] = 0;
    //  The command name may hold spaces: fields are counted from its ')'.
    //  State is field 3, utime 14, stime 15
    char *cursor = strrchr (line, ')');
    unsigned long long utime = 0, stime = 0;
    if (!cursor
        || sscanf (cursor + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                   "%llu %llu",
                   &utime, &stime)
               != 2)
        return -1;
    return (double) (utime + stime) / (double) sysconf (_SC_CLK_TCK);
}

//  One "Name: N kB" field of /proc/PID/status in kB; -1 if absent.
static inline long
bench_process_status_kb (long pid, const char *name)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%ld/status", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    long value = -1;
    size_t name_size = strlen (name);
    while (fgets (line, sizeof line, file))
        if (strncmp (line, name, name_size) == 0 && line [name_size] == ':') {
            value = atol (line + name_size + 1);
            break;
        }
    fclose (file);
    return value;
}

//  Prints the server's CPU seconds per 100,000 requests between two
//  readings, its peak and current RSS: " server_cpu_s_per_100k=..
//  server_hwm_kb=.. server_rss_kb=..", nothing when a reading failed.
static inline void
bench_print_server (long pid, double cpu_before, double cpu_after,
                    long requests)
{
    if (pid <= 0 || cpu_before < 0 || cpu_after < 0 || requests < 1)
        return;
    printf (" server_cpu_s_per_100k=%.3f server_hwm_kb=%ld server_rss_kb=%ld",
            (cpu_after - cpu_before) * 100000.0 / (double) requests,
            bench_process_status_kb (pid, "VmHWM"),
            bench_process_status_kb (pid, "VmRSS"));
}

//  Raises the open-file limit: to 1,048,576 where allowed, else to the
//  hard limit.
static inline void
bench_raise_nofile (void)
{
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0) {
        struct rlimit wanted = { 1048576, 1048576 };
        if (setrlimit (RLIMIT_NOFILE, &wanted) != 0) {
            limit.rlim_cur = limit.rlim_max;
            setrlimit (RLIMIT_NOFILE, &limit);
        }
    }
}

#endif
