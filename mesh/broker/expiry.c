/*  =========================================================================
    expiry.c - warnings ahead of certificate expiry: the broker's own
    certificate (clients checking it with the mesh CA refuse it once it
    has expired), the trusted CAs and the identity certificates of the
    policy. Checked when the broker starts running, after each reload
    (SIGHUP) and once a day; never per message.
    =========================================================================
*/
#include <time.h>
#include "broker_internal.h"
#include "../../certs/ca.h"

#define CHECK_INTERVAL_MS (24 * 3600 * 1000LL)

//  --------------------------------------------------------------------------
//  Logs what ends within the warning time, or has ended; the next check is
//  a day from now. The broker's own certificate is read again each time,
//  so a renewed one copied in place is seen at the next SIGHUP.

void
pigato__broker_expiry_check (pigato_broker_t *self)
{
    int64_t now = (int64_t) time (NULL);
    self->cert_check_at = pigato__now_ms () + CHECK_INTERVAL_MS;
    int64_t *not_after = self->metrics.cert_not_after;  //  for metrics.c
    not_after [PIGATO__CERT_BROKER] = 0;
    if (self->cert_file) {
        pigato__cert_info_t info;
        char err [512];
        if (pigato__cert_read (self->cert_file, &info, err, sizeof err)) {
            char text [512];
            pigato__printable_quoted (err, text, sizeof text);
            pigato__log (PIGATO_LOG_WARNING,
                         "event=certificate_unreadable kind=broker "
                         "error=\"%s\"",
                         text);
        }
        else {
            //  Expired, it is refused by every client that checks it
            pigato__cert_expiry_log ("broker", info.name, self->cert_file,
                                     info.not_after, now,
                                     self->cert_warn_seconds, PIGATO_LOG_ERROR);
            not_after [PIGATO__CERT_BROKER] = info.not_after;
        }
    }
    if (self->guard) {
        pigato__guard_expiry_check (self->guard, now, self->cert_warn_seconds);
        pigato__guard_expiry (self->guard, &not_after [PIGATO__CERT_CA],
                              &not_after [PIGATO__CERT_IDENTITY]);
    }
}
