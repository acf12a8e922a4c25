/*  =========================================================================
    request.c - request records: frames, opts, reject lists (service.h)
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "service.h"

pigato__request_t *
pigato__request_new (zframe_t **client_p, zframe_t **rid_p, zframe_t **data_p,
                     zframe_t **opts_p)
{
    pigato__request_t *self = (pigato__request_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    if (pigato__bkey_set (&self->key, zframe_data (*client_p),
                          zframe_size (*client_p), zframe_data (*rid_p),
                          zframe_size (*rid_p))) {
        free (self);
        return NULL;
    }
    self->client = *client_p;
    *client_p = NULL;
    self->rid = *rid_p;
    *rid_p = NULL;
    self->data = *data_p;
    *data_p = NULL;
    self->opts = *opts_p;
    *opts_p = NULL;
    self->timeout = PIGATO_TIMEOUT_MS;
    pigato__timer_init (&self->expiry);
    return self;
}

void
pigato__request_destroy (pigato__request_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__request_t *self = *self_p;
    zframe_destroy (&self->client);
    zframe_destroy (&self->rid);
    zframe_destroy (&self->data);
    zframe_destroy (&self->opts);
    free (self->rejected);
    free (self);
    *self_p = NULL;
}

int
pigato__request_parse_opts (pigato__request_t *self, int64_t default_timeout)
{
    self->timeout = default_timeout;
    self->retries_left = 0;
    if (!self->opts)
        return 0;
    json_error_t error;
    json_t *opts = json_loadb ((const char *) zframe_data (self->opts),
                               zframe_size (self->opts), 0, &error);
    if (!opts || !json_is_object (opts)) {
        json_decref (opts);
        return -1;
    }
    self->timeout = pigato__opts_timeout (opts, default_timeout);
    self->retries_left = pigato__opts_retry (opts);
    json_decref (opts);
    return 0;
}

int
pigato__request_add_reject (pigato__request_t *self, uint64_t serial)
{
    if (pigato__request_rejected_by (self, serial))
        return 0;
    uint64_t *rejected = (uint64_t *) realloc (
        self->rejected, (self->rejected_count + 1) * sizeof (uint64_t));
    if (!rejected)
        return PIGATO_E_NOMEM;
    rejected [self->rejected_count++] = serial;
    self->rejected = rejected;
    return 0;
}

bool
pigato__request_rejected_by (const pigato__request_t *self, uint64_t serial)
{
    for (size_t index = 0; index < self->rejected_count; index++)
        if (self->rejected [index] == serial)
            return true;
    return false;
}
