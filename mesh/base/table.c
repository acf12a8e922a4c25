/*  =========================================================================
    table.c - the hot-path hash tables (see table.h)
    =========================================================================
*/
#include <stdint.h>
#include <stdlib.h>
#include "table.h"

#define TABLE_MIN  16    //  slots, never fewer
#define TABLE_KEEP 1024  //  slots a table never shrinks below

typedef struct {
    size_t hash;
    void *item;  //  NULL: empty slot
} s_slot_t;

struct _pigato__table_t {
    s_slot_t *slots;
    size_t mask;  //  slots - 1
    size_t size;  //  items
    pigato__table_match_fn *match;
};

pigato__table_t *
pigato__table_new (pigato__table_match_fn *match)
{
    pigato__table_t *self = (pigato__table_t *) calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->slots = (s_slot_t *) calloc (TABLE_MIN, sizeof (s_slot_t));
    if (!self->slots) {
        free (self);
        return NULL;
    }
    self->mask = TABLE_MIN - 1;
    self->match = match;
    return self;
}

void
pigato__table_destroy (pigato__table_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free ((*self_p)->slots);
    free (*self_p);
    *self_p = NULL;
}

//  Slot of the item with this key, or of the empty slot ending its probe.
static size_t
s_find (const pigato__table_t *self, size_t hash, const void *key)
{
    size_t index = hash & self->mask;
    const s_slot_t *slot = self->slots + index;
    while (slot->item) {
        if (slot->hash == hash && self->match (slot->item, key))
            break;
        index = (index + 1) & self->mask;
        slot = self->slots + index;
    }
    return index;
}

//  Moves every item into a new array of `count` slots (a power of two
//  holding more than twice the items). Returns 0 or -1.
static int
s_resize (pigato__table_t *self, size_t count)
{
    s_slot_t *slots = (s_slot_t *) calloc (count, sizeof (s_slot_t));
    if (!slots)
        return -1;
    size_t mask = count - 1;
    for (size_t index = 0; index <= self->mask; index++) {
        s_slot_t *old = self->slots + index;
        if (!old->item)
            continue;
        size_t slot = old->hash & mask;
        while (slots [slot].item)
            slot = (slot + 1) & mask;
        slots [slot] = *old;
    }
    free (self->slots);
    self->slots = slots;
    self->mask = mask;
    return 0;
}

void *
pigato__table_lookup (const pigato__table_t *self, size_t hash, const void *key)
{
    return self->slots [s_find (self, hash, key)].item;
}

int
pigato__table_insert (pigato__table_t *self, size_t hash, const void *key,
                      void *item)
{
    if (!item)
        return -1;
    size_t index = s_find (self, hash, key);
    if (self->slots [index].item)
        return 1;
    //  At most half full, so probes stay short
    if ((self->size + 1) * 2 > self->mask + 1) {
        if (self->mask + 1 > SIZE_MAX / 2 / sizeof (s_slot_t)
            || s_resize (self, (self->mask + 1) * 2))
            return -1;
        index = s_find (self, hash, key);
    }
    self->slots [index].hash = hash;
    self->slots [index].item = item;
    self->size++;
    return 0;
}

void *
pigato__table_delete (pigato__table_t *self, size_t hash, const void *key)
{
    size_t hole = s_find (self, hash, key);
    void *item = self->slots [hole].item;
    if (!item)
        return NULL;
    //  Shift back each following entry of the run that may move into the
    //  hole: one whose home slot is not between the hole and itself
    size_t next = (hole + 1) & self->mask;
    while (self->slots [next].item) {
        size_t home = self->slots [next].hash & self->mask;
        if (((next - home) & self->mask) >= ((next - hole) & self->mask)) {
            self->slots [hole] = self->slots [next];
            hole = next;
        }
        next = (next + 1) & self->mask;
    }
    self->slots [hole].item = NULL;
    self->size--;
    //  A table that emptied gives memory back, down to TABLE_KEEP slots
    //  (16 KiB): below that, a table that fills and empties every round
    //  (requests in flight) would resize every round. If the allocation
    //  fails the table just stays larger.
    if (self->mask + 1 > TABLE_KEEP && self->size * 8 < self->mask + 1)
        s_resize (self, (self->mask + 1) / 2);
    return item;
}

size_t
pigato__table_size (const pigato__table_t *self)
{
    return self->size;
}

void *
pigato__table_next (const pigato__table_t *self, size_t *cursor)
{
    for (size_t index = *cursor; index <= self->mask; index++)
        if (self->slots [index].item) {
            *cursor = index + 1;
            return self->slots [index].item;
        }
    *cursor = self->mask + 1;
    return NULL;
}
