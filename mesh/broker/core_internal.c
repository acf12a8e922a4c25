/*  =========================================================================
    route_internal.c - requests the broker answers itself: $dir (worker ids
    per service) and MMI (RFC 8) for pigato clients (route.h).
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "front.h"

//  The text a request body names: the content of a JSON string, else the
//  bytes themselves (MDP peers send plain text). Empty, "null" and "\"\""
//  name nothing.
bool
pigato__route_body_name (const pigato__bytes_t *data, char *name,
                         size_t name_size)
{
    name [0] = 0;
    if (data->size == 0
    ||  (data->size == 4 && memcmp (data->data, "null", 4) == 0))
        return false;
    char *text = pigato__json_string_decode (data->data, data->size);
    const char *source = text ? text : NULL;
    size_t size = text ? strlen (text) : data->size;
    if (size >= name_size || (!text && memchr (data->data, 0, data->size))) {
        free (text);
        return false;
    }
    memcpy (name, source ? source : (const char *) data->data, size);
    name [size] = 0;
    free (text);
    return size > 0;
}

//  $dir: the worker ids of one service (the body names it), or of every
//  service, as JSON. Ids are routing ids as text (escaped if binary).
char *
pigato__route_directory (pigato_broker_t *self, const char *only)
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
bool
pigato__route_has_worker (pigato_broker_t *self, const void *name, size_t size)
{
    //  Resolution reads a service record: made for the question if need be
    pigato__service_t *service =
        pigato__services_require (self->services, name, size);
    pigato__service_t *targets [1];
    bool found = service
              && pigato__services_resolve (self->services, service, targets, 1);
    pigato__services_release (self->services, &service);
    return found;
}

//  Requests the broker answers itself: $dir, and MMI (RFC 8):
//  mmi.service -> 200 if the named service has a worker, 404 if not;
//  other mmi.* -> 501. Other $ names are reserved.
void
pigato__route_internal_service (pigato_broker_t *self, pigato__route_in_t *in,
                                const char *name)
{
    pigato__msg_t *m = &in->m;
    char target [PIGATO_SERVICE_MAX + 1];
    bool named = pigato__route_body_name (&m->data, target, sizeof target);
    char *answer = NULL;
    if (streq (name, "$dir"))
        answer = pigato__route_directory (self, named ? target : NULL);
    else
    if (streq (name, "mmi.service"))
        answer = strdup (named && pigato__route_has_worker (
                             self, target, strlen (target)) ? "200" : "404");
    else
    if (strncmp (name, "mmi.", 4) == 0)
        answer = strdup ("501");
    else {
        char text [PIGATO_SERVICE_MAX + 64];
        snprintf (text, sizeof text, "E_RESERVED_SERVICE %s is reserved for "
                  "the broker", name);
        pigato__route_send_error (self, m->native, &m->sender, &m->rid, text);
        return;
    }
    pigato__bytes_t data = { (const byte *) answer,
                             answer ? strlen (answer) : 0 };
    pigato__route_send_reply (self, m->native, &m->sender, PIGATO__REPLY,
                              &m->rid, 0, &data, NULL, NULL);
    free (answer);
    self->counters.requests++;
    self->counters.replies++;
}
