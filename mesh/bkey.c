/*  =========================================================================
    bkey.c - binary keys and keyed-hash tables (see bkey.h)
    =========================================================================
*/
#include <pthread.h>
#include <sodium.h>
#include <string.h>
#include "bkey.h"

static unsigned char s_hash_key [crypto_shorthash_KEYBYTES];
static pthread_once_t s_hash_key_once = PTHREAD_ONCE_INIT;

static void
s_hash_key_init (void)
{
    if (sodium_init () >= 0)
        crypto_shorthash_keygen (s_hash_key);
    else
        randombytes_buf (s_hash_key, sizeof s_hash_key);
}

static size_t
s_key_size (const void *key)
{
    const byte *bytes = (const byte *) key;
    return 2 + (size_t) (bytes [0] | (bytes [1] << 8));
}

int
pigato__bkey_set (pigato__bkey_t *key, const void *first, size_t first_size,
                  const void *second, size_t second_size)
{
    if (first_size > 255 || 1 + first_size + second_size > sizeof key->bytes - 2)
        return -1;
    size_t payload = 1 + first_size + second_size;
    key->bytes [0] = (byte) (payload & 0xff);
    key->bytes [1] = (byte) (payload >> 8);
    key->bytes [2] = (byte) first_size;
    if (first_size)
        memcpy (key->bytes + 3, first, first_size);
    if (second_size)
        memcpy (key->bytes + 3 + first_size, second, second_size);
    pthread_once (&s_hash_key_once, s_hash_key_init);
    crypto_shorthash ((unsigned char *) &key->hash, key->bytes,
                      s_key_size (key->bytes), s_hash_key);
    return 0;
}

void
pigato__bkey_copy (pigato__bkey_t *key, const pigato__bkey_t *source)
{
    memcpy (key->bytes, source->bytes, s_key_size (source->bytes));
    key->hash = source->hash;
}

void
pigato__bkey_first (const pigato__bkey_t *key, const byte **data,
                    size_t *size)
{
    *size = key->bytes [2];
    *data = key->bytes + 3;
}

void
pigato__bkey_second (const pigato__bkey_t *key, const byte **data,
                     size_t *size)
{
    size_t first = key->bytes [2];
    *size = s_key_size (key->bytes) - 3 - first;
    *data = key->bytes + 3 + first;
}

static size_t
s_hasher (const void *key)
{
    return (size_t) ((const pigato__bkey_t *) key)->hash;
}

bool
pigato__bkey_equal (const pigato__bkey_t *key, const pigato__bkey_t *other)
{
    if (key->hash != other->hash)
        return false;
    size_t size = s_key_size (key->bytes);
    return size == s_key_size (other->bytes)
        && memcmp (key->bytes, other->bytes, size) == 0;
}

static int
s_comparator (const void *first, const void *second)
{
    return !pigato__bkey_equal ((const pigato__bkey_t *) first,
                                (const pigato__bkey_t *) second);
}

static void *
s_keep (const void *key)
{
    return (void *) key;
}

zhashx_t *
pigato__bkey_table_new (void)
{
    pthread_once (&s_hash_key_once, s_hash_key_init);
    zhashx_t *table = zhashx_new ();
    if (!table)
        return NULL;
    zhashx_set_key_hasher (table, s_hasher);
    zhashx_set_key_comparator (table, s_comparator);
    zhashx_set_key_duplicator (table, s_keep);
    zhashx_set_key_destructor (table, NULL);
    return table;
}
