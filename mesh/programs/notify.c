/*  =========================================================================
    notify.c - sd_notify(3) for pigato-broker (notify.h). libsystemd is
    linked only into the daemon, never into libpigato: an application
    embedding a broker talks to its own service manager.
    =========================================================================
*/
#include <stdbool.h>
#include <stdio.h>
#include <time.h>
#include "notify.h"
#if PIGATO_WITH_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

//  Failures are ignored: without systemd (no $NOTIFY_SOCKET) sd_notify
//  returns 0 and sends nothing, and a broker runs the same either way.
static void
s_notify (const char *text)
{
#if PIGATO_WITH_SYSTEMD
    (void) sd_notify (0, text);
#else
    (void) text;
#endif
}

void
pigato__notify_ready (const char *status)
{
    char text [512];
    snprintf (text, sizeof text, "READY=1\nSTATUS=%s", status ? status : "");
    s_notify (text);
}

void
pigato__notify_reloading (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    char text [96];
    snprintf (text, sizeof text,
              "RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=%llu",
              (unsigned long long) now.tv_sec * 1000000ULL
                  + (unsigned long long) now.tv_nsec / 1000ULL);
    s_notify (text);
}

void
pigato__notify_stopping (void)
{
    static bool told;
    if (told)
        return;
    told = true;
    s_notify ("STOPPING=1\nSTATUS=stopping");
}
