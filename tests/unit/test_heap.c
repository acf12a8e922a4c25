/*  test_heap.c - timers come out in deadline order, whatever is moved or
    removed in between.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>
#include "../../mesh/base/heap.h"

typedef struct {
    int id;
    pigato__timer_t timer;
} owner_t;

static void
test_due_timers_pop_in_deadline_order (void **state)
{
    (void) state;
    pigato__heap_t *heap = pigato__heap_new ();
    owner_t owners [100];
    for (int index = 0; index < 100; index++) {
        owners [index].id = index;
        pigato__timer_init (&owners [index].timer);
        //  Deadlines in a scrambled order
        assert_int_equal (pigato__heap_set (heap, &owners [index].timer,
                                            (index * 37) % 100),
                          0);
    }
    assert_int_equal (pigato__heap_size (heap), 100);
    assert_null (pigato__heap_pop_due (heap, -1));
    int64_t last = -1;
    int popped = 0;
    pigato__timer_t *timer;
    while ((timer = pigato__heap_pop_due (heap, 1000))) {
        owner_t *owner = pigato__container_of (timer, owner_t, timer);
        assert_true (timer->when >= last);
        assert_false (pigato__timer_scheduled (&owner->timer));
        last = timer->when;
        popped++;
    }
    assert_int_equal (popped, 100);
    pigato__heap_destroy (&heap);
    assert_null (heap);
}

static void
test_reschedule_and_remove_keep_order (void **state)
{
    (void) state;
    pigato__heap_t *heap = pigato__heap_new ();
    enum { COUNT = 500 };
    owner_t *owners = calloc (COUNT, sizeof (owner_t));
    srand (7);
    for (int index = 0; index < COUNT; index++) {
        pigato__timer_init (&owners [index].timer);
        assert_int_equal (
            pigato__heap_set (heap, &owners [index].timer, rand () % 10000), 0);
    }
    //  Move half, remove a quarter
    for (int index = 0; index < COUNT; index += 2)
        assert_int_equal (
            pigato__heap_set (heap, &owners [index].timer, rand () % 10000), 0);
    size_t removed = 0;
    for (int index = 1; index < COUNT; index += 4) {
        pigato__heap_remove (heap, &owners [index].timer);
        pigato__heap_remove (heap, &owners [index].timer);  //  twice: no-op
        removed++;
    }
    assert_int_equal (pigato__heap_size (heap), COUNT - removed);
    int64_t last = -1;
    size_t popped = 0;
    pigato__timer_t *timer;
    while ((timer = pigato__heap_pop_due (heap, 10000))) {
        assert_true (timer->when >= last);
        last = timer->when;
        popped++;
    }
    assert_int_equal (popped, COUNT - removed);
    pigato__heap_destroy (&heap);
    free (owners);
}

static void
test_peek_and_not_yet_due (void **state)
{
    (void) state;
    pigato__heap_t *heap = pigato__heap_new ();
    owner_t a, b;
    pigato__timer_init (&a.timer);
    pigato__timer_init (&b.timer);
    assert_null (pigato__heap_peek (heap));
    assert_int_equal (pigato__heap_set (heap, &a.timer, 50), 0);
    assert_int_equal (pigato__heap_set (heap, &b.timer, 20), 0);
    assert_ptr_equal (pigato__heap_peek (heap), &b.timer);
    assert_null (pigato__heap_pop_due (heap, 19));
    assert_ptr_equal (pigato__heap_pop_due (heap, 20), &b.timer);
    pigato__heap_destroy (&heap);
    //  A destroyed heap leaves its timers idle, safe to reuse
    assert_false (pigato__timer_scheduled (&a.timer));
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_due_timers_pop_in_deadline_order),
        cmocka_unit_test (test_reschedule_and_remove_keep_order),
        cmocka_unit_test (test_peek_and_not_yet_due),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
