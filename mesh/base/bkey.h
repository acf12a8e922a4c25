/*  =========================================================================
    bkey.h - binary keys for tables keyed on peer-chosen bytes (routing
    ids, rids). Hashing is SipHash-1-3 with a random per-process key, so a
    peer cannot flood one bucket by choosing ids.

    A key is [u16 size][u8 first-part size][first part][second part]; it
    lives inside the item it indexes (tables do not copy keys), and lookups
    build one on the stack.
    =========================================================================
*/
#ifndef PIGATO_BKEY_H_INCLUDED
#define PIGATO_BKEY_H_INCLUDED

#include "internal.h"

//  Room for a 255-byte routing id plus a PIGATO_RID_MAX rid
#define PIGATO__BKEY_MAX (2 + 1 + 255 + PIGATO_RID_MAX)

//  bytes first: a key's address is its bytes' address. hash is the keyed
//  SipHash of the bytes, computed once by pigato__bkey_set: lookups,
//  inserts and deletes with a set key hash nothing again.
typedef struct {
    byte bytes [PIGATO__BKEY_MAX];
    uint64_t hash;
} pigato__bkey_t;

//  Builds a key from one or two parts, and its hash. Returns 0, or -1 if
//  too long.
int pigato__bkey_set (pigato__bkey_t *key, const void *first, size_t first_size,
                      const void *second,
                      size_t second_size) PIGATO__MUST_CHECK;

//  Copies a set key (its used bytes and hash).
void pigato__bkey_copy (pigato__bkey_t *key, const pigato__bkey_t *source);

//  The first / second part a key was built from, borrowed from the key.
//  (Inline: every reply reads both.)
static inline void
pigato__bkey_first (const pigato__bkey_t *key, const byte **data, size_t *size)
{
    *size = key->bytes [2];
    *data = key->bytes + 3;
}

static inline void
pigato__bkey_second (const pigato__bkey_t *key, const byte **data, size_t *size)
{
    size_t used = 2 + (size_t) (key->bytes [0] | (key->bytes [1] << 8));
    size_t first = key->bytes [2];
    *size = used - 3 - first;
    *data = key->bytes + 3 + first;
}

//  SipHash-c-d of size bytes under a 16-byte key (bkey_set uses 1-3).
uint64_t pigato__siphash (const unsigned char key [16], const void *data,
                          size_t size, int compression, int finalization);

//  SipHash-1-3 of NUL-terminated text under the same per-process key: a
//  zhashx key hasher for tables keyed on names peers choose (czmq's
//  default hash has no key, so colliding names are easy to make).
size_t pigato__hash_keyed_text (const void *key);

//  True if two set keys are the same (hashes first).
bool pigato__bkey_equal (const pigato__bkey_t *key,
                         const pigato__bkey_t *other);

//  A zhashx whose keys are pigato__bkey_t pointers held by the items.
zhashx_t *pigato__bkey_table_new (void);

#endif
