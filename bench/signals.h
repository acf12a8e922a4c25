/*  =========================================================================
    signals.h - SIGINT and SIGTERM end a load generator's run through
    zsys_interrupted: libpigato leaves signals to the program (pigato.h),
    so the program catches them. No SA_RESTART: the signal wakes a poll.
    =========================================================================
*/
#ifndef PIGATO_BENCH_SIGNALS_H
#define PIGATO_BENCH_SIGNALS_H

#include <czmq.h>
#include <signal.h>
#include <string.h>

static void
bench_on_stop_signal (int signal_number)
{
    (void) signal_number;
    zsys_interrupted = 1;
}

static inline void
bench_catch_stop_signals (void)
{
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = bench_on_stop_signal;
    sigemptyset (&action.sa_mask);
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
}

#endif
