/*  =========================================================================
    settings.c - the configuration a client and a worker share, set the
    same way for both (settings.h).
    =========================================================================
*/
#include "settings.h"

void
pigato__settings_init (pigato__settings_t *self, char *err, size_t err_size)
{
    *self = (pigato__settings_t) { .interval_ms = PIGATO_HEARTBEAT_MS,
                                   .liveness = PIGATO_LIVENESS,
                                   .framing = PIGATO__FRAMING_AUTO,
                                   .max_outbound = PIGATO_LINK_MAX_OUTBOUND,
                                   .err = err,
                                   .err_size = err_size };
}

void
pigato__settings_reset (pigato__settings_t *self)
{
    pigato__peer_security_reset (&self->security);
}

int
pigato__settings_set_server_key (pigato__settings_t *self, const char *key)
{
    if (!self)
        return PIGATO_E_INVALID;
    return pigato__peer_security_set_server_key (&self->security, key,
                                                 self->err, self->err_size);
}

int
pigato__settings_set_server_ca (pigato__settings_t *self, const char *ca_crt)
{
    if (!self)
        return PIGATO_E_INVALID;
    return pigato__peer_security_set_server_ca (&self->security, ca_crt,
                                                self->err, self->err_size);
}

int
pigato__settings_set_key_file (pigato__settings_t *self, const char *path)
{
    if (!self)
        return PIGATO_E_INVALID;
    return pigato__peer_security_set_key_file (&self->security, path, self->err,
                                               self->err_size);
}

int
pigato__settings_set_insecure (pigato__settings_t *self, bool insecure)
{
    if (!self)
        return PIGATO_E_INVALID;
    self->security.insecure = insecure;
    return PIGATO_OK;
}

int
pigato__settings_set_heartbeat (pigato__settings_t *self, int interval_ms,
                                int liveness)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (interval_ms > 0)
        self->interval_ms = interval_ms;
    if (liveness > 0)
        self->liveness = liveness;
    return PIGATO_OK;
}

int
pigato__settings_set_framing (pigato__settings_t *self, const char *framing)
{
    if (!self)
        return PIGATO_E_INVALID;
    int parsed = pigato__framing_parse (framing);
    if (parsed < 0) {
        pigato__errorf (self->err, self->err_size,
                        "unknown framing '%.32s' "
                        "(expected auto, native or 0.0.46)",
                        framing ? framing : "(null)");
        return PIGATO_E_INVALID;
    }
    self->framing = (pigato__framing_t) parsed;
    return PIGATO_OK;
}

int
pigato__settings_set_max_outbound (pigato__settings_t *self, int64_t bytes)
{
    if (!self)
        return PIGATO_E_INVALID;
    if (bytes < PIGATO__LINK_OUTBOUND_MIN
        || bytes > PIGATO__LINK_OUTBOUND_MAX) {
        pigato__errorf (self->err, self->err_size,
                        "the outbound budget must be from %lld bytes (1 MiB) "
                        "to %lld (1 TiB), not %lld",
                        (long long) PIGATO__LINK_OUTBOUND_MIN,
                        (long long) PIGATO__LINK_OUTBOUND_MAX,
                        (long long) bytes);
        return PIGATO_E_INVALID;
    }
    self->max_outbound = bytes;
    return PIGATO_OK;
}
