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

//  SipHash with c compression and d finalization rounds (Aumasson and
//  Bernstein, "SipHash: a fast short-input PRF"). Keys use SipHash-1-3,
//  the variant Rust's and Python's hash tables use against hash flooding:
//  half the rounds of libsodium's SipHash-2-4, which a test checks this
//  code against with c = 2, d = 4.

#define S_ROTATE(x, b) (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))

#define S_SIPROUND                                                             \
    do {                                                                       \
        v0 += v1;                                                              \
        v1 = S_ROTATE (v1, 13);                                                \
        v1 ^= v0;                                                              \
        v0 = S_ROTATE (v0, 32);                                                \
        v2 += v3;                                                              \
        v3 = S_ROTATE (v3, 16);                                                \
        v3 ^= v2;                                                              \
        v0 += v3;                                                              \
        v3 = S_ROTATE (v3, 21);                                                \
        v3 ^= v0;                                                              \
        v2 += v1;                                                              \
        v1 = S_ROTATE (v1, 17);                                                \
        v1 ^= v2;                                                              \
        v2 = S_ROTATE (v2, 32);                                                \
    } while (0)

//  Little-endian load of up to 8 bytes
static inline uint64_t
s_load_le (const byte *bytes, size_t size)
{
    uint64_t word = 0;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy (&word, bytes, size);
#else
    for (size_t index = 0; index < size; index++)
        word |= (uint64_t) bytes [index] << (8 * index);
#endif
    return word;
}

//  Inlined where the round counts are constants, so the loops unroll
static inline __attribute__ ((always_inline)) uint64_t
s_siphash (const unsigned char key [16], const void *data, size_t size,
           int compression, int finalization)
{
    uint64_t k0 = s_load_le (key, 8), k1 = s_load_le (key + 8, 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL;
    uint64_t v3 = k1 ^ 0x7465646279746573ULL;
    const byte *at = (const byte *) data;
    size_t left = size;
    for (; left >= 8; left -= 8, at += 8) {
        uint64_t word = s_load_le (at, 8);
        v3 ^= word;
        for (int round = 0; round < compression; round++)
            S_SIPROUND;
        v0 ^= word;
    }
    uint64_t last = ((uint64_t) size << 56) | s_load_le (at, left);
    v3 ^= last;
    for (int round = 0; round < compression; round++)
        S_SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    for (int round = 0; round < finalization; round++)
        S_SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t
pigato__siphash (const unsigned char key [16], const void *data, size_t size,
                 int compression, int finalization)
{
    return s_siphash (key, data, size, compression, finalization);
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
    if (first_size > 255
        || 1 + first_size + second_size > sizeof key->bytes - 2)
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
    key->hash = s_siphash (s_hash_key, key->bytes, s_key_size (key->bytes), 1,
                           3);
    return 0;
}

void
pigato__bkey_copy (pigato__bkey_t *key, const pigato__bkey_t *source)
{
    memcpy (key->bytes, source->bytes, s_key_size (source->bytes));
    key->hash = source->hash;
}

static size_t
s_hasher (const void *key)
{
    return (size_t) ((const pigato__bkey_t *) key)->hash;
}

size_t
pigato__hash_keyed_text (const void *key)
{
    pthread_once (&s_hash_key_once, s_hash_key_init);
    return (size_t) s_siphash (s_hash_key, key, strlen ((const char *) key), 1,
                               3);
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
