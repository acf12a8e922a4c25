/*  =========================================================================
    heap.c - binary min-heap of timers (see heap.h)
    =========================================================================
*/
#include <stdlib.h>
#include "heap.h"
#include "internal.h"

struct _pigato__heap_t {
    pigato__timer_t **items;  //  heap-ordered timer pointers
    size_t size;              //  timers in the heap
    size_t capacity;          //  allocated slots
};

void
pigato__timer_init (pigato__timer_t *timer)
{
    timer->when = 0;
    timer->index = PIGATO__TIMER_IDLE;
}

bool
pigato__timer_scheduled (const pigato__timer_t *timer)
{
    return timer->index != PIGATO__TIMER_IDLE;
}

pigato__heap_t *
pigato__heap_new (void)
{
    return (pigato__heap_t *) calloc (1, sizeof (pigato__heap_t));
}

void
pigato__heap_destroy (pigato__heap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__heap_t *self = *self_p;
    for (size_t index = 0; index < self->size; index++)
        self->items [index]->index = PIGATO__TIMER_IDLE;
    free (self->items);
    free (self);
    *self_p = NULL;
}

static void
s_place (pigato__heap_t *self, size_t index, pigato__timer_t *timer)
{
    self->items [index] = timer;
    timer->index = index;
}

static void
s_sift_up (pigato__heap_t *self, size_t index)
{
    pigato__timer_t *timer = self->items [index];
    while (index > 0) {
        size_t parent = (index - 1) / 2;
        if (self->items [parent]->when <= timer->when)
            break;
        s_place (self, index, self->items [parent]);
        index = parent;
    }
    s_place (self, index, timer);
}

static void
s_sift_down (pigato__heap_t *self, size_t index)
{
    pigato__timer_t *timer = self->items [index];
    while (true) {
        size_t child = 2 * index + 1;
        if (child >= self->size)
            break;
        if (child + 1 < self->size
            && self->items [child + 1]->when < self->items [child]->when)
            child++;
        if (timer->when <= self->items [child]->when)
            break;
        s_place (self, index, self->items [child]);
        index = child;
    }
    s_place (self, index, timer);
}

int
pigato__heap_set (pigato__heap_t *self, pigato__timer_t *timer, int64_t when)
{
    if (pigato__timer_scheduled (timer)) {
        int64_t old = timer->when;
        timer->when = when;
        if (when < old)
            s_sift_up (self, timer->index);
        else
            s_sift_down (self, timer->index);
        return 0;
    }
    if (self->size == self->capacity) {
        size_t capacity = self->capacity ? self->capacity * 2 : 64;
        pigato__timer_t **items = (pigato__timer_t **) realloc (
            self->items, capacity * sizeof (pigato__timer_t *));
        if (!items)
            return PIGATO_E_NOMEM;
        self->items = items;
        self->capacity = capacity;
    }
    timer->when = when;
    s_place (self, self->size++, timer);
    s_sift_up (self, timer->index);
    return 0;
}

void
pigato__heap_remove (pigato__heap_t *self, pigato__timer_t *timer)
{
    if (!pigato__timer_scheduled (timer))
        return;
    size_t index = timer->index;
    timer->index = PIGATO__TIMER_IDLE;
    pigato__timer_t *last = self->items [--self->size];
    if (index == self->size)
        return;
    s_place (self, index, last);
    if (index > 0 && self->items [(index - 1) / 2]->when > last->when)
        s_sift_up (self, index);
    else
        s_sift_down (self, index);
}

pigato__timer_t *
pigato__heap_peek (pigato__heap_t *self)
{
    return self->size ? self->items [0] : NULL;
}

pigato__timer_t *
pigato__heap_pop_due (pigato__heap_t *self, int64_t now)
{
    if (self->size == 0 || self->items [0]->when > now)
        return NULL;
    pigato__timer_t *timer = self->items [0];
    pigato__heap_remove (self, timer);
    return timer;
}

size_t
pigato__heap_size (pigato__heap_t *self)
{
    return self->size;
}
