/*  =========================================================================
    core_internal.c - requests the broker answers itself (core.h): $dir
    (worker ids per service) and MMI (ZeroMQ RFC 8). One answer for every
    framing; the front-ends only encode it.
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "core.h"
#include "../wire/mdp.h"

bool
pigato__core_reserved (const pigato__bytes_t *name)
{
    return (name->size > 0 && name->data [0] == '$') || pigato__mmi_is (name);
}

//  The text a request body names: the content of a JSON string, else the
//  bytes themselves (MDP peers send plain text). Empty, "null" and "\"\""
//  name nothing.
static bool
s_body_name (const pigato__bytes_t *data, char *name, size_t name_size)
{
    name [0] = 0;
    if (!data || data->size == 0
        || (data->size == 4 && memcmp (data->data, "null", 4) == 0))
        return false;
    char *text = pigato__json_string_decode (data->data, data->size);
    size_t size = text ? strlen (text) : data->size;
    if (size >= name_size || (!text && memchr (data->data, 0, data->size))) {
        free (text);
        return false;
    }
    memcpy (name, text ? text : (const char *) data->data, size);
    name [size] = 0;
    free (text);
    return size > 0;
}

//  $dir: the worker ids of one service (the body names it), or of every
//  service, as JSON. Ids are routing ids as text (escaped if binary).
static char *
s_directory (pigato__core_t *self, const char *only)
{
    json_t *map = json_object ();
    for (pigato__service_t *service = pigato__services_first (self->services);
         service; service = pigato__services_next (self->services)) {
        if (!service->workers || (only && !streq (only, service->name)))
            continue;
        json_t *ids = json_array ();
        for (pigato__worker_t *worker = service->workers; worker;
             worker = worker->next)
            json_array_append_new (ids, json_string (worker->name));
        json_object_set_new (map, service->name, ids);
    }
    char *text;
    if (only) {
        json_t *ids = json_object_get (map, only);
        text = ids ? json_dumps (ids, JSON_COMPACT | JSON_ENCODE_ANY)
                   : strdup ("[]");
    }
    else
        text = json_dumps (map, JSON_COMPACT);
    json_decref (map);
    return text;
}

//  True if requests for this name would find a worker now (its own, a
//  satisfying version or a wildcard): what mmi.service answers.
static bool
s_has_worker (pigato__core_t *self, const char *name)
{
    //  Resolution reads a service record: made for the question if need be
    pigato__service_t *service = pigato__services_require (self->services, name,
                                                           strlen (name));
    pigato__service_t *targets [1];
    bool found = service
              && pigato__services_resolve (self->services, service, targets, 1);
    pigato__services_release (self->services, &service);
    return found;
}

char *
pigato__core_internal (pigato__core_t *self, const pigato__bytes_t *name,
                       const pigato__bytes_t *body, int *status)
{
    char target [PIGATO_SERVICE_MAX + 1];
    bool named = s_body_name (body, target, sizeof target);
    *status = 0;
    size_t mmi_size = strlen (PIGATO__MMI_PREFIX);
    if (name->size == 4 && memcmp (name->data, "$dir", 4) == 0)
        return s_directory (self, named ? target : NULL);
    if (name->size == strlen (PIGATO__MMI_SERVICE)
        && memcmp (name->data, PIGATO__MMI_SERVICE, name->size) == 0)
        return strdup (named && s_has_worker (self, target)
                           ? PIGATO__MMI_FOUND
                           : PIGATO__MMI_NOT_FOUND);
    if (name->size >= mmi_size
        && memcmp (name->data, PIGATO__MMI_PREFIX, mmi_size) == 0)
        return strdup (PIGATO__MMI_NOT_IMPLEMENTED);
    char printable [PIGATO__SERVICE_TEXT];
    char text [PIGATO__SERVICE_TEXT + 64];
    snprintf (text, sizeof text,
              "E_RESERVED_SERVICE %s is reserved for the "
              "broker",
              pigato__printable (name->data, name->size, printable,
                                 sizeof printable));
    *status = -1;
    return strdup (text);
}
