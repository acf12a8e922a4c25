/*  =========================================================================
    cache.c - reply cache (see cache.h). Keys are BLAKE2b digests of
    service name and body; entries keep both to rule out collisions, and
    sit in one LRU list.
    =========================================================================
*/
#include <jansson.h>
#include <sodium.h>
#include <string.h>
#include "cache.h"

#define ENTRY_OVERHEAD 128  //  bytes counted per entry beyond data

typedef struct _entry_t entry_t;
struct _entry_t {
    char key [2 * 16 + 1];  //  hex digest (table key)
    byte *bytes;            //  service, body, data, opts back to back
    size_t service_size, body_size, data_size, opts_size;
    size_t cost;  //  bytes counted against the budget
    int64_t expires;
    entry_t *prev, *next;  //  LRU list, most recent first
};

struct _pigato__cache_t {
    zhashx_t *entries;     //  key -> entry_t
    entry_t *head, *tail;  //  LRU order
    size_t max_bytes;
    size_t bytes;
    int64_t hits;
};

static void
s_entry_free (entry_t **entry_p)
{
    entry_t *entry = *entry_p;
    if (entry) {
        free (entry->bytes);
        free (entry);
        *entry_p = NULL;
    }
}

static void
s_digest (const char *service, const pigato__bytes_t *body, char *key)
{
    crypto_generichash_state state;
    byte digest [16];
    size_t service_size = strlen (service) + 1;  //  with its NUL
    crypto_generichash_init (&state, NULL, 0, sizeof digest);
    crypto_generichash_update (&state, (const byte *) service, service_size);
    if (body->size)
        crypto_generichash_update (&state, body->data, body->size);
    crypto_generichash_final (&state, digest, sizeof digest);
    sodium_bin2hex (key, 2 * sizeof digest + 1, digest, sizeof digest);
}

static void
s_unlink (pigato__cache_t *self, entry_t *entry)
{
    if (entry->prev)
        entry->prev->next = entry->next;
    else
        self->head = entry->next;
    if (entry->next)
        entry->next->prev = entry->prev;
    else
        self->tail = entry->prev;
    entry->prev = entry->next = NULL;
}

static void
s_push_front (pigato__cache_t *self, entry_t *entry)
{
    entry->prev = NULL;
    entry->next = self->head;
    if (self->head)
        self->head->prev = entry;
    else
        self->tail = entry;
    self->head = entry;
}

static void
s_drop (pigato__cache_t *self, entry_t *entry)
{
    s_unlink (self, entry);
    self->bytes -= entry->cost;
    zhashx_delete (self->entries, entry->key);
    s_entry_free (&entry);
}

static void
s_evict (pigato__cache_t *self, size_t room)
{
    while (self->tail && self->bytes + room > self->max_bytes)
        s_drop (self, self->tail);
}

pigato__cache_t *
pigato__cache_new (size_t max_bytes)
{
    if (sodium_init () < 0)
        return NULL;
    pigato__cache_t *self = (pigato__cache_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->entries = zhashx_new ();
    if (!self->entries) {
        free (self);
        return NULL;
    }
    self->max_bytes = max_bytes;
    return self;
}

void
pigato__cache_destroy (pigato__cache_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__cache_t *self = *self_p;
    while (self->head)
        s_drop (self, self->head);
    zhashx_destroy (&self->entries);
    free (self);
    *self_p = NULL;
}

void
pigato__cache_set_max (pigato__cache_t *self, size_t max_bytes)
{
    self->max_bytes = max_bytes;
    s_evict (self, 0);
}

int
pigato__cache_put (pigato__cache_t *self, const char *service,
                   const pigato__bytes_t *body, const pigato__bytes_t *data,
                   const pigato__bytes_t *opts, int64_t expires)
{
    size_t service_size = strlen (service);
    size_t size = service_size + body->size + data->size + opts->size;
    size_t cost = size + ENTRY_OVERHEAD;
    if (cost > self->max_bytes)
        return -1;
    char key [2 * 16 + 1];
    s_digest (service, body, key);
    entry_t *old = (entry_t *) zhashx_lookup (self->entries, key);
    if (old)
        s_drop (self, old);
    s_evict (self, cost);
    entry_t *entry = (entry_t *) calloc (1, sizeof *entry);
    byte *bytes = (byte *) malloc (size ? size : 1);
    if (!entry || !bytes) {
        free (entry);
        free (bytes);
        return -1;
    }
    memcpy (entry->key, key, sizeof key);
    byte *at = bytes;
    memcpy (at, service, service_size);
    at += service_size;
    if (body->size)
        memcpy (at, body->data, body->size);
    at += body->size;
    if (data->size)
        memcpy (at, data->data, data->size);
    at += data->size;
    if (opts->size)
        memcpy (at, opts->data, opts->size);
    entry->bytes = bytes;
    entry->service_size = service_size;
    entry->body_size = body->size;
    entry->data_size = data->size;
    entry->opts_size = opts->size;
    entry->cost = cost;
    entry->expires = expires;
    if (zhashx_insert (self->entries, entry->key, entry)) {
        s_entry_free (&entry);
        return -1;
    }
    s_push_front (self, entry);
    self->bytes += cost;
    return 0;
}

bool
pigato__cache_get (pigato__cache_t *self, const char *service,
                   const pigato__bytes_t *body, int64_t now,
                   pigato__cached_t *reply)
{
    if (!self->head) {
        return false;
    }
    char key [2 * 16 + 1];
    s_digest (service, body, key);
    entry_t *entry = (entry_t *) zhashx_lookup (self->entries, key);
    size_t service_size = strlen (service);
    if (entry && entry->expires <= now) {
        s_drop (self, entry);
        entry = NULL;
    }
    if (!entry || entry->service_size != service_size
        || entry->body_size != body->size
        || memcmp (entry->bytes, service, service_size) != 0
        || (body->size
            && memcmp (entry->bytes + service_size, body->data, body->size)
                   != 0)) {
        return false;
    }
    s_unlink (self, entry);
    s_push_front (self, entry);
    self->hits++;
    const byte *at = entry->bytes + entry->service_size + entry->body_size;
    reply->data.data = at;
    reply->data.size = entry->data_size;
    reply->opts.data = at + entry->data_size;
    reply->opts.size = entry->opts_size;
    return true;
}

size_t
pigato__cache_entries (pigato__cache_t *self)
{
    return zhashx_size (self->entries);
}

size_t
pigato__cache_bytes (pigato__cache_t *self)
{
    return self->bytes;
}

int64_t
pigato__cache_hits (pigato__cache_t *self)
{
    return self->hits;
}

int64_t
pigato__cache_ttl (const pigato__bytes_t *opts)
{
    //  Most replies carry no "cache": skip the parser for them
    if (opts->size < 9 || opts->size > PIGATO__OPTS_MAX
        || !memmem (opts->data, opts->size, "\"cache\"", 7))
        return 0;
    json_error_t error;
    json_t *root = json_loadb ((const char *) opts->data, opts->size, 0,
                               &error);
    json_t *cache = json_object_get (root, "cache");
    int64_t ttl = 0;
    if (json_is_number (cache)) {
        double value = json_number_value (cache);
        ttl = value < 1                            ? 0
            : value > (double) PIGATO__TIMEOUT_CAP ? PIGATO__TIMEOUT_CAP
                                                   : (int64_t) value;
    }
    json_decref (root);
    return ttl;
}
