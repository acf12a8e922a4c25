/*  =========================================================================
    heap.h - timers: a binary min-heap of deadlines embedded in their owners.

    A timer is a small struct inside the owner (request, reply, ...); the heap
    stores pointers to timers and keeps each timer's index, so insert,
    update and remove are O(log n) and peek is O(1). Recover the owner with
    pigato__container_of (timer, owner_t, field).
    =========================================================================
*/
#ifndef PIGATO_HEAP_H_INCLUDED
#define PIGATO_HEAP_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "internal.h"

#define pigato__container_of(ptr, type, member)                                \
    ((type *) ((char *) (ptr) -offsetof (type, member)))

#define PIGATO__TIMER_IDLE SIZE_MAX

typedef struct {
    int64_t when;  //  deadline, ms on pigato__now_ms ()'s clock
    size_t index;  //  position in the heap, TIMER_IDLE if none
} pigato__timer_t;

typedef struct _pigato__heap_t pigato__heap_t;

//  Initializes a timer as not scheduled. Call before first use.
void pigato__timer_init (pigato__timer_t *timer);

//  True if the timer is in a heap.
bool pigato__timer_scheduled (const pigato__timer_t *timer);

pigato__heap_t *pigato__heap_new (void);

//  Destroys the heap; timers still in it are marked idle.
void pigato__heap_destroy (pigato__heap_t **self_p);

//  Schedules (or reschedules) a timer at `when`. Returns 0 or E_NOMEM.
int pigato__heap_set (pigato__heap_t *self, pigato__timer_t *timer,
                      int64_t when) PIGATO__MUST_CHECK;

//  Unschedules a timer; no-op if it is idle.
void pigato__heap_remove (pigato__heap_t *self, pigato__timer_t *timer);

//  The earliest timer, or NULL if the heap is empty.
pigato__timer_t *pigato__heap_peek (pigato__heap_t *self);

//  Removes and returns the earliest timer whose deadline is <= now, or
//  NULL if none is due.
pigato__timer_t *pigato__heap_pop_due (pigato__heap_t *self, int64_t now);

size_t pigato__heap_size (pigato__heap_t *self);

#endif
