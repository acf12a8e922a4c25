/*  =========================================================================
    table.h - the hot-path hash tables: items indexed by a key they hold,
    with the key's hash computed once by the caller and kept.

    Open addressing with linear probing in a power-of-two array of (hash,
    item) slots, at most half full; a delete shifts the entries after it
    back, so there are no tombstones. Nothing is allocated per insert, no
    key is copied, and a lookup costs one mask and, almost always, one
    match call. It replaces zhashx where a table is touched several times
    per request (zhashx allocates an item per insert, divides by a prime
    and calls through two function pointers per probe).

    Hashes must already be well mixed (keyed SipHash, pigato__hash_text):
    the low bits pick the slot. The table never looks inside items; match
    (item, key) says whether an item has a key.
    =========================================================================
*/
#ifndef PIGATO_TABLE_H_INCLUDED
#define PIGATO_TABLE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include "internal.h"

typedef bool (pigato__table_match_fn) (const void *item, const void *key);

typedef struct _pigato__table_t pigato__table_t;

//  A new empty table. Returns NULL if memory ran out.
pigato__table_t *pigato__table_new (pigato__table_match_fn *match);

//  Frees the table, not its items.
void pigato__table_destroy (pigato__table_t **self_p);

//  The item with this key, or NULL.
void *pigato__table_lookup (const pigato__table_t *self, size_t hash,
                            const void *key);

//  Adds an item under its key. Returns 0, 1 if an item with that key is
//  already there (the table is unchanged), or -1 if memory ran out.
int pigato__table_insert (pigato__table_t *self, size_t hash, const void *key,
                          void *item) PIGATO__MUST_CHECK;

//  Takes the item with this key out and returns it, or NULL if none.
void *pigato__table_delete (pigato__table_t *self, size_t hash,
                            const void *key);

//  Items in the table.
size_t pigato__table_size (const pigato__table_t *self);

//  Iteration: start with *cursor = 0; returns the next item, or NULL at
//  the end. Nothing may be inserted or deleted until the walk ends;
//  collect first what is to change.
void *pigato__table_next (const pigato__table_t *self, size_t *cursor);

#endif
