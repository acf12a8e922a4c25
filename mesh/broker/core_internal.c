/*  =========================================================================
    core_internal.c - requests the broker answers itself (core.h): $dir
    (worker ids per service) and MMI (ZeroMQ RFC 8). One answer for every
    framing; the front-ends only encode it. Each shows only what its
    caller may call, is bounded in size, and costs each identity at most
    its quota (a token bucket).
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "core.h"
#include "../wire/mdp.h"
#include "../../auth/acl.h"

#define TARGETS_MAX 16  //  resolutions looked at by mmi.service

bool
pigato__core_reserved (const pigato__bytes_t *name)
{
    return (name->size > 0 && name->data [0] == '$') || pigato__mmi_is (name);
}

//  The text a request body names: the content of a JSON string, else the
//  bytes themselves (MDP peers send plain text). Empty, "\"\"", any other
//  JSON value (null, a number, an object...) and "undefined" (what Node
//  pigato sends for `client.request ('$dir')`) name nothing.
static bool
s_body_name (const pigato__bytes_t *data, char *name, size_t name_size)
{
    name [0] = 0;
    if (!data || data->size == 0
        || (data->size == 9 && memcmp (data->data, "undefined", 9) == 0))
        return false;
    char *text = pigato__json_string_decode (data->data, data->size);
    if (!text) {
        json_t *value = json_loadb ((const char *) data->data, data->size,
                                    JSON_DECODE_ANY, NULL);
        if (value) {
            json_decref (value);
            return false;  //  JSON, but not a string
        }
    }
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

//  True if the policy lets identity call name (no policy: everything).
static bool
s_may_call (pigato__core_t *self, const char *identity, const char *name)
{
    return !self->allows
        || self->allows (self->allows_arg, identity ? identity : "",
                         PIGATO__VERB_CALL, name);
}

//  --------------------------------------------------------------------------
//  Quotas: a token bucket per identity

typedef struct {
    double tokens;  //  requests it may make now
    int64_t at_ms;  //  when tokens was last brought up to date
} s_bucket_t;

//  Brings a bucket up to now: PIGATO__INTERNAL_RATE tokens a second, at
//  most PIGATO__INTERNAL_BURST. True if it is full.
static bool
s_bucket_refill (s_bucket_t *bucket, int64_t now)
{
    if (now > bucket->at_ms) {
        bucket->tokens += (double) (now - bucket->at_ms) * PIGATO__INTERNAL_RATE
                        / 1000.0;
        bucket->at_ms = now;
    }
    if (bucket->tokens >= PIGATO__INTERNAL_BURST) {
        bucket->tokens = PIGATO__INTERNAL_BURST;
        return true;
    }
    return false;
}

//  Forgets full buckets (a new one starts full: nothing is lost), so the
//  table holds only identities that asked in the last few seconds.
static void
s_quotas_prune (pigato__core_t *self)
{
    zlistx_t *keys = zhashx_keys (self->quotas);
    if (!keys)
        return;
    for (const char *key = (const char *) zlistx_first (keys); key;
         key = (const char *) zlistx_next (keys)) {
        s_bucket_t *bucket = (s_bucket_t *) zhashx_lookup (self->quotas, key);
        if (bucket && s_bucket_refill (bucket, self->now_ms))
            zhashx_delete (self->quotas, key);
    }
    zlistx_destroy (&keys);
}

//  Takes one token from identity's bucket. False if it has none left (or
//  no bucket can be made: out of memory refuses rather than lets through).
static bool
s_quota_take (pigato__core_t *self, const char *identity)
{
    const char *key = identity ? identity : "";
    s_bucket_t *bucket = (s_bucket_t *) zhashx_lookup (self->quotas, key);
    if (!bucket) {
        if (zhashx_size (self->quotas) >= PIGATO__QUOTAS_MAX)
            s_quotas_prune (self);
        bucket = (s_bucket_t *) calloc (1, sizeof *bucket);
        if (!bucket)
            return false;
        bucket->tokens = PIGATO__INTERNAL_BURST;
        bucket->at_ms = self->now_ms;
        if (zhashx_insert (self->quotas, key, bucket)) {
            free (bucket);
            return false;
        }
    }
    s_bucket_refill (bucket, self->now_ms);
    if (bucket->tokens < 1)
        return false;
    bucket->tokens -= 1;
    return true;
}

//  An E_QUOTA refusal: counted, logged (rate-limited), an error text.
static char *
s_quota_exceeded (pigato__core_t *self, const char *identity,
                  const pigato__bytes_t *name)
{
    pigato__core_quota_log (self, identity, name, "internal");
    char text [160];
    snprintf (text, sizeof text,
              "E_QUOTA at most %d requests a second for $dir, $stats and "
              "mmi.* per identity (bursts of %d); try again later",
              PIGATO__INTERNAL_RATE, PIGATO__INTERNAL_BURST);
    return strdup (text);
}

void
pigato__core_internal_tick (pigato__core_t *self)
{
    pigato__ratelimit_flush (&self->quota_log, "quota_exceeded",
                             PIGATO_LOG_WARNING);
    pigato__ratelimit_flush (&self->worker_log, "worker_event",
                             PIGATO_LOG_INFO);
}

//  --------------------------------------------------------------------------
//  $dir: JSON text written into a buffer of PIGATO__DIR_ANSWER_MAX bytes

typedef struct {
    char *data;   //  PIGATO__DIR_ANSWER_MAX + 1 bytes
    size_t size;  //  written so far
} s_answer_t;

//  Appends size bytes if they fit with reserve bytes still free after
//  them (what must close the JSON). False, and nothing written, if not.
static bool
s_put (s_answer_t *answer, const char *text, size_t size, size_t reserve)
{
    if (answer->size + size + reserve > PIGATO__DIR_ANSWER_MAX)
        return false;
    memcpy (answer->data + answer->size, text, size);
    answer->size += size;
    return true;
}

//  text as a JSON string (caller frees); NULL if it is not UTF-8.
static char *
s_json (const char *text)
{
    json_t *string = json_string (text);
    char *encoded = string ? json_dumps (string, JSON_ENCODE_ANY) : NULL;
    json_decref (string);
    return encoded;
}

//  Appends a service's worker ids as a JSON array, at most
//  PIGATO__DIR_WORKERS_MAX (more sets *truncated), leaving reserve bytes
//  free after it; the caller made sure "[]" fits. False if ids were left
//  out for want of room: the array then holds as many whole ids as fit.
static bool
s_put_ids (s_answer_t *answer, const pigato__service_t *service, size_t reserve,
           bool *truncated)
{
    bool room = s_put (answer, "[", 1, 1 + reserve);
    size_t count = 0;
    for (pigato__worker_t *worker = service->workers; worker && room;
         worker = worker->next) {
        if (count == PIGATO__DIR_WORKERS_MAX) {
            *truncated = true;
            break;
        }
        char *id = s_json (worker->name);
        if (!id)
            continue;  //  not UTF-8: cannot be shown (ids are escaped text)
        size_t mark = answer->size;
        room = (count == 0 || s_put (answer, ",", 1, 1 + reserve))
            && s_put (answer, id, strlen (id), 1 + reserve);
        free (id);
        if (!room) {
            answer->size = mark;  //  no comma without its id
            *truncated = true;
        }
        count++;
    }
    s_put (answer, "]", 1, reserve);
    return room;
}

//  $dir: the worker ids of one service (only, if not NULL), or of every
//  service, as JSON; only services identity may call. Ids are routing ids
//  as text (escaped if binary).
static char *
s_directory (pigato__core_t *self, const char *identity, const char *only,
             bool *truncated)
{
    s_answer_t answer = { malloc (PIGATO__DIR_ANSWER_MAX + 1), 0 };
    if (!answer.data)
        return NULL;
    if (only) {
        pigato__service_t *service = pigato__services_lookup (
            self->services, only, strlen (only));
        //  A service identity may not call looks like one with no worker
        if (service && service->workers && s_may_call (self, identity, only))
            s_put_ids (&answer, service, 0, truncated);  //  whole ids
        else
            s_put (&answer, "[]", 2, 0);
        answer.data [answer.size] = 0;
        return answer.data;
    }
    s_put (&answer, "{", 1, 1);
    size_t listed = 0;
    for (pigato__service_t *service = pigato__services_first (self->services);
         service; service = pigato__services_next (self->services)) {
        if (!service->workers || !s_may_call (self, identity, service->name))
            continue;
        char *key = s_json (service->name);
        if (!key)
            continue;  //  not UTF-8: no JSON key can name it
        size_t mark = answer.size;
        //  Room for the entry's "[]" and the closing "}" stays free; an
        //  entry that does not fit whole is left out whole
        bool fits = (listed == 0 || s_put (&answer, ",", 1, 3))
                 && s_put (&answer, key, strlen (key), 3)
                 && s_put (&answer, ":", 1, 3)
                 && s_put_ids (&answer, service, 1, truncated);
        free (key);
        if (!fits) {
            answer.size = mark;
            *truncated = true;
            break;
        }
        listed++;
    }
    s_put (&answer, "}", 1, 0);
    answer.data [answer.size] = 0;
    return answer.data;
}

//  True if a request from identity for this name would find a worker now
//  that the policy lets it reach (its own, a satisfying version identity
//  may call, or a wildcard whose worker may serve the name): what
//  mmi.service answers.
static bool
s_has_worker (pigato__core_t *self, const char *identity, const char *name)
{
    if (!s_may_call (self, identity, name))
        return false;
    //  Resolution reads a service record: made for the question if need be
    pigato__service_t *service = pigato__services_require (self->services, name,
                                                           strlen (name));
    if (!service)
        return false;
    pigato__service_t *targets [TARGETS_MAX];
    size_t count = pigato__services_resolve (self->services, service, targets,
                                             TARGETS_MAX);
    bool found = false;
    for (size_t index = 0; index < count && !found; index++) {
        pigato__service_t *target = targets [index];
        if (target == service || !self->allows)
            found = true;
        else if (target->versioned)
            found = s_may_call (self, identity, target->name);
        else if (target->wildcard)
            for (pigato__worker_t *worker = target->workers; worker && !found;
                 worker = worker->next)
                found = self->allows (self->allows_arg, worker->identity,
                                      PIGATO__VERB_SERVE, name);
        else
            found = true;
    }
    pigato__services_release (self->services, &service);
    return found;
}

char *
pigato__core_internal (pigato__core_t *self, const char *identity,
                       const pigato__bytes_t *name, const pigato__bytes_t *body,
                       int *status, bool *truncated)
{
    *status = 0;
    *truncated = false;
    if (!s_quota_take (self, identity)) {
        *status = -1;
        return s_quota_exceeded (self, identity, name);
    }
    char target [PIGATO_SERVICE_MAX + 1];
    bool named = s_body_name (body, target, sizeof target);
    size_t mmi_size = strlen (PIGATO__MMI_PREFIX);
    if (name->size == 4 && memcmp (name->data, "$dir", 4) == 0)
        return s_directory (self, identity, named ? target : NULL, truncated);
    if (name->size == 6 && memcmp (name->data, "$stats", 6) == 0
        && self->stats_answer)
        return self->stats_answer (self->stats_answer_arg,
                                   identity ? identity : "",
                                   named ? target : NULL, truncated);
    if (name->size == strlen (PIGATO__MMI_SERVICE)
        && memcmp (name->data, PIGATO__MMI_SERVICE, name->size) == 0)
        return strdup (named && s_has_worker (self, identity, target)
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
