/*  test_table.c - the hot-path hash table finds exactly what was put in and
    not taken out, through growth, shrinking, colliding hashes and deletes
    that wrap around the end of the array.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>
#include "../../mesh/base/table.h"

typedef struct {
    int key;
    bool in;  //  the model: should the table hold it?
} item_t;

static bool
s_match (const void *item, const void *key)
{
    return ((const item_t *) item)->key == *(const int *) key;
}

//  A poor hash on purpose for some tests: many keys share a home slot
static size_t
s_hash (int key, int spread)
{
    return spread ? (size_t) key * 0x9e3779b97f4a7c15ULL
                  : (size_t) (key % 3) + 14;  //  homes 14..16: wrap at 16
}

static void
s_check (pigato__table_t *table, item_t *items, int count, int spread)
{
    size_t held = 0;
    for (int index = 0; index < count; index++) {
        void *found = pigato__table_lookup (
            table, s_hash (items [index].key, spread), &items [index].key);
        assert_ptr_equal (found, items [index].in ? &items [index] : NULL);
        held += items [index].in;
    }
    assert_int_equal (pigato__table_size (table), held);
    //  The walk sees each held item once
    size_t cursor = 0, walked = 0;
    item_t *item;
    while ((item = (item_t *) pigato__table_next (table, &cursor))) {
        assert_true (item->in);
        walked++;
    }
    assert_int_equal (walked, held);
}

static void
s_random_operations (int spread, int count, int rounds)
{
    pigato__table_t *table = pigato__table_new (s_match);
    assert_non_null (table);
    item_t *items = (item_t *) calloc ((size_t) count, sizeof (item_t));
    for (int index = 0; index < count; index++)
        items [index].key = index * 7 + 1;
    srand (11);
    for (int round = 0; round < rounds; round++) {
        item_t *item = items + rand () % count;
        size_t hash = s_hash (item->key, spread);
        if (rand () % 3) {
            int rc = pigato__table_insert (table, hash, &item->key, item);
            assert_int_equal (rc, item->in ? 1 : 0);
            item->in = true;
        }
        else {
            void *gone = pigato__table_delete (table, hash, &item->key);
            assert_ptr_equal (gone, item->in ? item : NULL);
            item->in = false;
        }
        if (round % 97 == 0)
            s_check (table, items, count, spread);
    }
    s_check (table, items, count, spread);
    //  Empty it: everything goes, and the table still works after
    for (int index = 0; index < count; index++)
        if (items [index].in) {
            assert_ptr_equal (
                pigato__table_delete (table, s_hash (items [index].key, spread),
                                      &items [index].key),
                &items [index]);
            items [index].in = false;
        }
    s_check (table, items, count, spread);
    assert_int_equal (pigato__table_insert (table,
                                            s_hash (items [0].key, spread),
                                            &items [0].key, &items [0]),
                      0);
    items [0].in = true;
    s_check (table, items, count, spread);
    pigato__table_destroy (&table);
    assert_null (table);
    free (items);
}

static void
test_matches_a_model_with_good_hashes (void **state)
{
    (void) state;
    s_random_operations (1, 5000, 60000);
}

static void
test_matches_a_model_when_hashes_collide_and_wrap (void **state)
{
    (void) state;
    //  Three home slots at the end of the smallest array: runs wrap past
    //  the end, and deletes shift entries back across it
    s_random_operations (0, 12, 4000);
    s_random_operations (0, 300, 20000);
}

static void
test_grows_and_gives_memory_back (void **state)
{
    (void) state;
    pigato__table_t *table = pigato__table_new (s_match);
    enum { COUNT = 100000 };
    item_t *items = (item_t *) calloc (COUNT, sizeof (item_t));
    for (int index = 0; index < COUNT; index++) {
        items [index].key = index;
        items [index].in = true;
        assert_int_equal (pigato__table_insert (table, s_hash (index, 1),
                                                &items [index].key,
                                                &items [index]),
                          0);
    }
    s_check (table, items, COUNT, 1);
    for (int index = 0; index < COUNT - 3; index++) {
        assert_ptr_equal (pigato__table_delete (table, s_hash (index, 1),
                                                &items [index].key),
                          &items [index]);
        items [index].in = false;
    }
    s_check (table, items, COUNT, 1);
    //  Three items left: the array shrank back to 1,024 slots (a table
    //  of up to 512 items does not resize as it fills and empties)
    size_t cursor = 0;
    while (pigato__table_next (table, &cursor))
        ;
    assert_int_equal (cursor, 1024);
    pigato__table_destroy (&table);
    free (items);
}

static void
test_refuses_null_items_and_missing_keys (void **state)
{
    (void) state;
    pigato__table_t *table = pigato__table_new (s_match);
    int key = 5;
    assert_int_equal (pigato__table_insert (table, 1, &key, NULL), -1);
    assert_null (pigato__table_lookup (table, 1, &key));
    assert_null (pigato__table_delete (table, 1, &key));
    assert_int_equal (pigato__table_size (table), 0);
    pigato__table_destroy (&table);
    pigato__table_destroy (NULL);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_matches_a_model_with_good_hashes),
        cmocka_unit_test (test_matches_a_model_when_hashes_collide_and_wrap),
        cmocka_unit_test (test_grows_and_gives_memory_back),
        cmocka_unit_test (test_refuses_null_items_and_missing_keys),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
