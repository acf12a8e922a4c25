/*  =========================================================================
    alias.c - client aliases for workers (see alias.h)
    =========================================================================
*/
#include <sodium.h>
#include <string.h>
#include "alias.h"

#define FD_LIMIT (1 << 22)  //  as conns.c: absurd fds are not cached

//  The alias last made on one fd: for which generation and routing id
typedef struct {
    uint32_t generation;
    uint8_t client_size;
    uint8_t capacity;  //  room in client
    byte alias [PIGATO__ALIAS_SIZE];
    byte client [];  //  client_size bytes
} s_entry_t;

struct _pigato__aliases_t {
    unsigned char *key;  //  the hash key: secret, in sodium_malloc memory
                         //  (read-only once drawn)
    s_entry_t **by_fd;   //  the cache, indexed by fd (NULL: none)
    size_t size;         //  slots in by_fd
    byte scratch [PIGATO__ALIAS_SIZE];  //  when the cache cannot hold it
};

pigato__aliases_t *
pigato__aliases_new (void)
{
    if (sodium_init () < 0)
        return NULL;
    pigato__aliases_t *self = (pigato__aliases_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->key = (unsigned char *) sodium_malloc (
        crypto_shorthash_siphashx24_KEYBYTES);
    if (!self->key) {
        free (self);
        return NULL;
    }
    randombytes_buf (self->key, crypto_shorthash_siphashx24_KEYBYTES);
    sodium_mprotect_readonly (self->key);
    return self;
}

void
pigato__aliases_destroy (pigato__aliases_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__aliases_t *self = *self_p;
    for (size_t fd = 0; fd < self->size; fd++)
        free (self->by_fd [fd]);
    free (self->by_fd);
    sodium_free (self->key);  //  wipes it
    free (self);
    *self_p = NULL;
}

//  Writes the alias: SipHash-2-4 (128 bits) of routing id, fd and
//  generation (fixed size last, so no two inputs run together), in hex.
static void
s_make (const pigato__aliases_t *self, const pigato__bytes_t *client,
        const pigato__conn_t *conn, byte *alias)
{
    static const char digits [] = "0123456789abcdef";
    byte input [255 + 8];
    size_t size = client->size < 255 ? client->size : 255;
    if (size)
        memcpy (input, client->data, size);
    uint32_t fd = (uint32_t) conn->fd, generation = conn->generation;
    for (int index = 0; index < 4; index++) {
        input [size + index] = (byte) (fd >> (8 * index));
        input [size + 4 + index] = (byte) (generation >> (8 * index));
    }
    unsigned char hash [crypto_shorthash_siphashx24_BYTES];
    crypto_shorthash_siphashx24 (hash, input, size + 8, self->key);
    for (size_t index = 0; index < sizeof hash; index++) {
        alias [2 * index] = (byte) digits [hash [index] >> 4];
        alias [2 * index + 1] = (byte) digits [hash [index] & 15];
    }
}

//  The cache entry for a connection, made or grown to hold a routing id
//  of client_size bytes; NULL if the fd is not cached or out of memory.
static s_entry_t *
s_entry (pigato__aliases_t *self, int fd, size_t client_size)
{
    if (fd < 0 || fd >= FD_LIMIT)
        return NULL;
    if ((size_t) fd >= self->size) {
        size_t size = self->size ? self->size : 1024;
        while (size <= (size_t) fd)
            size *= 2;
        s_entry_t **by_fd = (s_entry_t **) realloc (self->by_fd,
                                                    size * sizeof *by_fd);
        if (!by_fd)
            return NULL;
        memset (by_fd + self->size, 0, (size - self->size) * sizeof *by_fd);
        self->by_fd = by_fd;
        self->size = size;
    }
    s_entry_t *entry = self->by_fd [fd];
    if (!entry || entry->capacity < client_size) {
        entry = (s_entry_t *) realloc (entry, sizeof *entry + client_size);
        if (!entry)
            return NULL;  //  the old entry stays, for its own routing id
        entry->capacity = (uint8_t) client_size;
        self->by_fd [fd] = entry;
    }
    return entry;
}

const byte *
pigato__aliases_get (pigato__aliases_t *self, const pigato__bytes_t *client,
                     const pigato__conn_t *conn)
{
    size_t client_size = client->size < 255 ? client->size : 255;
    if (conn->fd >= 0 && (size_t) conn->fd < self->size) {
        s_entry_t *entry = self->by_fd [conn->fd];
        if (entry && entry->generation == conn->generation
            && entry->client_size == client_size
            && memcmp (entry->client, client->data, client_size) == 0)
            return entry->alias;
    }
    s_entry_t *entry = conn->fd >= 0 ? s_entry (self, conn->fd, client_size)
                                     : NULL;
    if (!entry) {
        s_make (self, client, conn, self->scratch);
        return self->scratch;
    }
    entry->generation = conn->generation;
    entry->client_size = (uint8_t) client_size;
    if (client_size)
        memcpy (entry->client, client->data, client_size);
    s_make (self, client, conn, entry->alias);
    return entry->alias;
}
