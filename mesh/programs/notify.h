/*  =========================================================================
    notify.h - pigato-broker tells systemd where it is (Type=notify): the
    sd_notify(3) messages, sent to $NOTIFY_SOCKET when systemd set it and
    never otherwise. Built without libsystemd (make SYSTEMD=0), each call
    does nothing.
    =========================================================================
*/
#ifndef PIGATO_NOTIFY_H_INCLUDED
#define PIGATO_NOTIFY_H_INCLUDED

//  READY=1 with a STATUS= line: bound, serving (start-up done, or a reload
//  done).
void pigato__notify_ready (const char *status);

//  RELOADING=1 with MONOTONIC_USEC= (which systemd 253 and later want with
//  it; older ones ignore it): a reload begins. pigato__notify_ready ends
//  it.
void pigato__notify_reloading (void);

//  STOPPING=1: the broker begins to stop (or to drain before it stops);
//  sent once, later calls do nothing.
void pigato__notify_stopping (void);

#endif
