/*  =========================================================================
    request.c - request records: frames, opts, reject lists (service.h)
    =========================================================================
*/
#include <jansson.h>
#include <stddef.h>
#include <string.h>
#include "service.h"

void
pigato__request_pool_drain (pigato__request_pool_t *pool)
{
    while (pool->spare) {
        pigato__request_t *spare = pool->spare;
        pool->spare = spare->next;
        free (spare);
    }
    pool->count = 0;
}

//  A spare record from the pool, else a new one (uninitialised).
static pigato__request_t *
s_record (pigato__request_pool_t *pool)
{
    if (pool && pool->spare) {
        pigato__request_t *self = pool->spare;
        pool->spare = self->next;
        pool->count--;
        return self;
    }
    return (pigato__request_t *) malloc (sizeof (pigato__request_t));
}

//  Gives a record back to the pool, or frees it when the pool is full.
static void
s_record_free (pigato__request_pool_t *pool, pigato__request_t *self)
{
    if (pool && pool->count < PIGATO__REQUEST_POOL_MAX) {
        self->next = pool->spare;
        pool->spare = self;
        pool->count++;
    }
    else
        free (self);
}

pigato__request_t *
pigato__request_new (pigato__request_pool_t *pool,
                     const pigato__bytes_t *client,
                     const pigato__bytes_t *alias, const pigato__bytes_t *rid,
                     const pigato__bkey_t *key, zmq_msg_t *body_part,
                     const pigato__bytes_t *data, const pigato__bytes_t *opts)
{
    if (client->size > sizeof ((pigato__request_t *) NULL)->client)
        return NULL;
    pigato__request_t *self = s_record (pool);
    if (!self)
        return NULL;
    //  Zero what lookups and lists read; the key and the client are set
    //  just below
    memset (&self->body_part, 0,
            sizeof *self - offsetof (pigato__request_t, body_part));
    if (key)
        pigato__bkey_copy (&self->key, key);
    else if (pigato__bkey_set (&self->key, alias->data, alias->size, rid->data,
                               rid->size)) {
        s_record_free (pool, self);
        return NULL;
    }
    self->client_size = (uint8_t) client->size;
    if (client->size)
        memcpy (self->client, client->data, client->size);
    const byte *start = body_part ? (const byte *) zmq_msg_data (body_part)
                                  : NULL;
    if (body_part && data->size && data->data >= start
        && data->data + data->size <= start + zmq_msg_size (body_part)) {
        zmq_msg_init (&self->body_part);
        if (zmq_msg_copy (&self->body_part, body_part)) {
            s_record_free (pool, self);
            return NULL;
        }
        self->body_offset = (size_t) (data->data - start);
    }
    else if (zmq_msg_init_size (&self->body_part, data->size) == 0) {
        if (data->size)
            memcpy (zmq_msg_data (&self->body_part), data->data, data->size);
    }
    else {
        s_record_free (pool, self);
        return NULL;
    }
    self->body_size = data->size;
    if (opts && opts->size) {
        self->opts = (byte *) malloc (opts->size);
        if (!self->opts) {
            zmq_msg_close (&self->body_part);
            s_record_free (pool, self);
            return NULL;
        }
        memcpy (self->opts, opts->data, opts->size);
        self->opts_size = opts->size;
    }
    self->timeout = PIGATO_TIMEOUT_MS;
    pigato__timer_init (&self->expiry);
    pigato__conn_link_init (&self->conn_link);
    return self;
}

void
pigato__request_destroy (pigato__request_pool_t *pool,
                         pigato__request_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__request_t *self = *self_p;
    zmq_msg_close (&self->body_part);
    free (self->opts);
    free (self->target);
    free (self->rejected);
    s_record_free (pool, self);
    *self_p = NULL;
}

pigato__bytes_t
pigato__request_client (const pigato__request_t *self)
{
    return (pigato__bytes_t) { self->client, self->client_size };
}

pigato__bytes_t
pigato__request_alias (const pigato__request_t *self)
{
    pigato__bytes_t bytes;
    pigato__bkey_first (&self->key, &bytes.data, &bytes.size);
    return bytes;
}

pigato__bytes_t
pigato__request_rid (const pigato__request_t *self)
{
    pigato__bytes_t bytes;
    pigato__bkey_second (&self->key, &bytes.data, &bytes.size);
    return bytes;
}

pigato__bytes_t
pigato__request_body (pigato__request_t *self)
{
    pigato__bytes_t bytes = { (const byte *) zmq_msg_data (&self->body_part)
                                  + self->body_offset,
                              self->body_size };
    return bytes;
}

pigato__bytes_t
pigato__worker_routing_id (const pigato__worker_t *worker)
{
    pigato__bytes_t bytes;
    pigato__bkey_first (&worker->key, &bytes.data, &bytes.size);
    return bytes;
}

int
pigato__request_parse_opts (pigato__request_t *self, int64_t default_timeout)
{
    self->timeout = default_timeout;
    self->retries_left = 0;
    if (!self->opts)
        return 0;
    if (pigato__opts_fast (self->opts, self->opts_size, default_timeout,
                           &self->timeout, &self->retries_left))
        return 0;
    json_error_t error;
    json_t *opts = json_loadb ((const char *) self->opts, self->opts_size, 0,
                               &error);
    if (!opts || !json_is_object (opts)) {
        json_decref (opts);
        return -1;
    }
    self->timeout = pigato__opts_timeout (opts, default_timeout);
    self->retries_left = pigato__opts_retry (opts);
    json_t *target = json_object_get (opts, "workerId");
    if (json_is_string (target) && json_string_length (target) > 0
        && json_string_length (target) <= 255) {
        self->target_size = json_string_length (target);
        self->target = (byte *) malloc (self->target_size);
        if (self->target)
            memcpy (self->target, json_string_value (target),
                    self->target_size);
        else
            self->target_size = 0;
    }
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
