/*  test_store.c - the durable store (mesh/broker/store.h) as titanic.c
    uses it: batches written by the store thread and read back after a
    reopen, replies and deletions, a capped file that fills up, and the
    folders and files it refuses.
*/
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>
#include "../../mesh/broker/store.h"
#include "../../mesh/broker/store_format.h"

static char s_dir [] = "/tmp/pigato-test-store.XXXXXX";
static char s_store [256];  //  the store folder inside s_dir

static int
setup (void **state)
{
    (void) state;
    assert_non_null (mkdtemp (s_dir));
    snprintf (s_store, sizeof s_store, "%s/store", s_dir);
    return 0;
}

static int
teardown (void **state)
{
    (void) state;
    char *command = zsys_sprintf ("rm -rf %s", s_dir);
    assert_int_equal (system (command), 0);
    free (command);
    return 0;
}

//  Each test starts with no store folder
static int
fresh (void **state)
{
    (void) state;
    char *command = zsys_sprintf ("rm -rf %s", s_store);
    assert_int_equal (system (command), 0);
    free (command);
    return 0;
}

//  Waits (on the store's fd, as the broker's poll does) for the next batch
//  back, at most 10 s.
static pigato__store_batch_t *
s_done (pigato__store_t *store)
{
    pigato__store_batch_t *done = NULL;
    for (int tries = 0; !done && tries < 100; tries++) {
        struct pollfd item = { pigato__store_fd (store), POLLIN, 0 };
        poll (&item, 1, 100);
        done = pigato__store_done (store);
    }
    assert_non_null (done);
    return done;
}

//  Hands a batch over and waits (on the store's fd, as the broker's poll
//  does) until it comes back; returns its status.
static int
s_write (pigato__store_t *store, pigato__store_batch_t *batch, char *error,
         size_t error_size)
{
    pigato__store_commit (store, &batch);
    assert_null (batch);
    pigato__store_batch_t *done = s_done (store);
    const char *text;
    int status = pigato__store_batch_status (done, &text);
    snprintf (error, error_size, "%s", text);
    pigato__store_batch_destroy (&done);
    return status;
}

static pigato__store_row_t
s_row (int index, const char *body)
{
    pigato__store_row_t row;
    memset (&row, 0, sizeof row);
    memset (row.id, index, sizeof row.id);
    row.identity = "alice";
    row.key = index == 1 ? (const byte *) "key-1" : NULL;
    row.key_size = index == 1 ? 5 : 0;
    row.service = "echo";
    row.body_kind = PIGATO__STORE_BODY_ONE;
    row.body = (const byte *) body;
    row.body_size = strlen (body);
    row.opts = index == 2 ? (const byte *) "{\"a\":1}" : NULL;
    row.opts_size = index == 2 ? 7 : 0;
    row.created = 1000 + index;
    row.deadline = 2000 + index;
    row.keep = 3000;
    return row;
}

//  What a load finds, row by row.
typedef struct {
    int count;
    pigato__store_row_t rows [8];
    char bodies [8][64];
    char replies [8][64];
} s_found_t;

static int
s_collect (void *arg, const pigato__store_row_t *row)
{
    s_found_t *found = (s_found_t *) arg;
    int at = found->count++;
    found->rows [at] = *row;
    snprintf (found->bodies [at], 64, "%.*s", (int) row->body_size,
              (const char *) row->body);
    snprintf (found->replies [at], 64, "%.*s", (int) row->reply_size,
              (const char *) row->reply);
    //  Borrowed pointers die with the call
    found->rows [at].identity = found->rows [at].service = NULL;
    found->rows [at].key = found->rows [at].opts = NULL;
    return 0;
}

//  How many rows a load finds, and their bodies' bytes.
typedef struct {
    int rows;
    size_t bytes;
} s_count_t;

static int
s_count (void *arg, const pigato__store_row_t *row)
{
    s_count_t *count = (s_count_t *) arg;
    count->rows++;
    count->bytes += row->body_size;
    return 0;
}

static pigato__store_t *
s_open (char *error, size_t error_size)
{
    pigato__store_t *store = pigato__store_open (s_store, 0, error, error_size);
    assert_non_null (store);
    return store;
}

static void
test_batches_survive_a_reopen (void **state)
{
    (void) state;
    char error [512];
    pigato__store_t *store = s_open (error, sizeof error);
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    pigato__store_batch_t *batch = pigato__store_batch_new ();
    for (int index = 1; index <= 3; index++) {
        char body [16];
        snprintf (body, sizeof body, "body-%d", index);
        pigato__store_row_t row = s_row (index, body);
        assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    }
    assert_int_equal (pigato__store_batch_size (batch), 3);
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    //  A reply drops the body; a deletion removes the row
    byte id [PIGATO__STORE_ID_SIZE];
    batch = pigato__store_batch_new ();
    memset (id, 1, sizeof id);
    assert_int_equal (pigato__store_batch_reply (batch, id, 1500, -1,
                                                 (const byte *) "oops", 4),
                      0);
    memset (id, 3, sizeof id);
    assert_int_equal (pigato__store_batch_delete (batch, id), 0);
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    assert_int_equal (pigato__store_commits (store), 2);
    pigato__store_destroy (&store);
    assert_null (store);

    store = s_open (error, sizeof error);
    s_found_t found = { 0 };
    assert_int_equal (
        pigato__store_load (store, s_collect, &found, error, sizeof error), 0);
    assert_int_equal (found.count, 2);
    for (int at = 0; at < found.count; at++) {
        pigato__store_row_t *row = &found.rows [at];
        if (row->id [0] == 1) {
            assert_true (row->replied);
            assert_int_equal (row->status, -1);
            assert_int_equal (row->replied_at, 1500);
            assert_string_equal (found.replies [at], "oops");
            assert_string_equal (found.bodies [at], "");
            assert_int_equal (row->key_size, 5);
        }
        else {
            assert_int_equal (row->id [0], 2);
            assert_false (row->replied);
            assert_string_equal (found.bodies [at], "body-2");
            assert_int_equal (row->opts_size, 7);
            assert_int_equal (row->deadline, 2002);
        }
    }
    pigato__store_destroy (&store);
}

//  A batch handed over while another is being written waits behind it;
//  both come back, oldest first, and both are on disk.
static void
test_batches_queue_and_come_back_in_order (void **state)
{
    (void) state;
    char error [512];
    pigato__store_t *store = s_open (error, sizeof error);
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    for (int index = 1; index <= 2; index++) {
        pigato__store_batch_t *batch = pigato__store_batch_new ();
        pigato__store_row_t row = s_row (index, "queued");
        assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
        pigato__store_commit (store, &batch);
        assert_null (batch);
    }
    for (int index = 1; index <= 2; index++) {
        pigato__store_batch_t *done = s_done (store);
        const char *text;
        assert_int_equal (pigato__store_batch_status (done, &text), 0);
        const byte *id;
        assert_int_equal (pigato__store_batch_op (done, 0, &id),
                          PIGATO__STORE_INSERT);
        assert_int_equal (id [0], index);
        pigato__store_batch_destroy (&done);
    }
    assert_int_equal (pigato__store_commits (store), 2);
    pigato__store_destroy (&store);
    store = s_open (error, sizeof error);
    s_count_t count = { 0, 0 };
    assert_int_equal (
        pigato__store_load (store, s_count, &count, error, sizeof error), 0);
    assert_int_equal (count.rows, 2);
    pigato__store_destroy (&store);
}

//  Commits are synced by the store's sync threads (COMMIT itself does
//  not sync): each batch comes back only after a sync, and a batch that
//  failed (a full store) comes back in its place without one.
static void
test_commits_come_back_synced (void **state)
{
    (void) state;
    char error [512];
    pigato__store_t *store = s_open (error, sizeof error);
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    for (int index = 1; index <= 3; index++) {
        pigato__store_batch_t *batch = pigato__store_batch_new ();
        pigato__store_row_t row = s_row (index, "synced");
        assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
        assert_int_equal (s_write (store, batch, error, sizeof error), 0);
        assert_true (pigato__store_syncs (store) >= index);
    }
    assert_int_equal (pigato__store_commits (store), 3);
    pigato__store_destroy (&store);
}

//  A failed fdatasync (a disk that fails its writes): the batch it covered
//  fails, and so does every later one, with the reason; nothing is tried
//  again (a second fsync after a failed one may succeed without the
//  pages that could not be written). What was synced before stays.
static void
test_a_failed_sync_stops_the_store (void **state)
{
    (void) state;
    char error [512];
    pigato__store_t *store = s_open (error, sizeof error);
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    pigato__store_batch_t *batch = pigato__store_batch_new ();
    pigato__store_row_t row = s_row (1, "before");
    assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    pigato__store_fail_syncs (store);
    for (int index = 2; index <= 3; index++) {
        batch = pigato__store_batch_new ();
        row = s_row (index, "after");
        assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
        assert_int_equal (s_write (store, batch, error, sizeof error),
                          PIGATO_E_STORE);
        assert_non_null (strstr (error, "fdatasync of the WAL failed"));
        assert_non_null (strstr (error, "takes nothing more until the broker "
                                        "restarts"));
    }
    assert_int_equal (pigato__store_commits (store), 1);
    pigato__store_destroy (&store);
    store = s_open (error, sizeof error);
    s_found_t found;
    memset (&found, 0, sizeof found);
    assert_int_equal (
        pigato__store_load (store, s_collect, &found, error, sizeof error), 0);
    //  The first is there; the second was committed before its sync
    //  failed (it may be on disk, answered 500); the third never was
    assert_true (found.count >= 1 && found.count <= 2);
    assert_string_equal (found.bodies [0], "before");
    pigato__store_destroy (&store);
}

//  Waits at most 5 s (10 ms at a time) for the store's syncs to reach
//  count; returns the ms it waited.
static int64_t
s_wait_syncs (pigato__store_t *store, int64_t count)
{
    int64_t started = zclock_mono ();
    for (int tries = 0; pigato__store_syncs (store) < count && tries < 500;
         tries++)
        zclock_sleep (10);
    assert_true (pigato__store_syncs (store) >= count);
    return zclock_mono () - started;
}

//  With a sync interval (pigato-broker --store-sync MS): a batch comes
//  back once committed, before any sync; the WAL is synced behind it,
//  no sooner than the interval after the commit that wanted it; a failed
//  sync stops the store as without an interval (the batches it covered
//  came back already: that is the interval's bargain).
static void
test_an_interval_syncs_behind_the_commits (void **state)
{
    (void) state;
    char error [512];
    pigato__store_t *store = s_open (error, sizeof error);
    assert_int_equal (pigato__store_start (store, 1000, error, sizeof error),
                      0);
    assert_int_equal (pigato__store_interval (store), 1000);
    int64_t committed = zclock_mono ();
    pigato__store_batch_t *batch = pigato__store_batch_new ();
    pigato__store_row_t row = s_row (1, "first");
    assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    assert_int_equal (pigato__store_syncs (store), 0);
    s_wait_syncs (store, 1);
    assert_true (zclock_mono () - committed >= 1000);
    //  Two more commits come back at once; one sync covers both
    for (int index = 2; index <= 3; index++) {
        batch = pigato__store_batch_new ();
        row = s_row (index, "then");
        assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
        assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    }
    assert_int_equal (pigato__store_syncs (store), 1);
    s_wait_syncs (store, 2);
    assert_int_equal (pigato__store_commits (store), 3);
    //  A failed sync: what came back stays answered, the store breaks
    pigato__store_fail_syncs (store);
    batch = pigato__store_batch_new ();
    row = s_row (4, "unsynced");
    assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    for (int tries = 0; !pigato__store_broken (store) && tries < 500; tries++)
        zclock_sleep (10);
    assert_true (pigato__store_broken (store));
    batch = pigato__store_batch_new ();
    row = s_row (5, "refused");
    assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    assert_int_equal (s_write (store, batch, error, sizeof error),
                      PIGATO_E_STORE);
    assert_non_null (strstr (error, "fdatasync of the WAL failed"));
    pigato__store_destroy (&store);
    //  Without a failure the three synced ones are there on reopen
    store = s_open (error, sizeof error);
    s_found_t found;
    memset (&found, 0, sizeof found);
    assert_int_equal (
        pigato__store_load (store, s_collect, &found, error, sizeof error), 0);
    assert_true (found.count >= 3);
    assert_string_equal (found.bodies [0], "first");
    pigato__store_destroy (&store);
}

//  One batch far larger than one write of the VFS's (a burst, or what
//  piled up while a write failed) commits and reads back whole.
static void
test_a_large_batch_commits (void **state)
{
    (void) state;
    char error [512], body [2048];
    memset (body, 'b', sizeof body - 1);
    body [sizeof body - 1] = 0;
    pigato__store_t *store = s_open (error, sizeof error);
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    pigato__store_batch_t *batch = pigato__store_batch_new ();
    for (int index = 0; index < 3000; index++) {
        pigato__store_row_t row = s_row (1, body);
        for (int byte = 0; byte < 8; byte++)
            row.id [byte] = (uint8_t) ((uint64_t) (index + 1)
                                       >> (56 - 8 * byte));
        assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    }
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    pigato__store_destroy (&store);
    store = s_open (error, sizeof error);
    s_count_t count = { 0, 0 };
    assert_int_equal (
        pigato__store_load (store, s_count, &count, error, sizeof error), 0);
    assert_int_equal (count.rows, 3000);
    assert_int_equal (count.bytes, 3000 * (sizeof body - 1));
    pigato__store_destroy (&store);
}

static void
test_a_capped_store_fills_up_and_says_so (void **state)
{
    (void) state;
    char error [512], body [4096];
    pigato__store_t *store = pigato__store_open (s_store, 64 * 1024, error,
                                                 sizeof error);
    assert_non_null (store);
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    memset (body, 'x', sizeof body - 1);
    body [sizeof body - 1] = 0;
    int status = 0;
    for (int index = 1; index < 200 && status == 0; index++) {
        pigato__store_batch_t *batch = pigato__store_batch_new ();
        pigato__store_row_t row = s_row (index, body);
        assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
        status = s_write (store, batch, error, sizeof error);
    }
    assert_int_equal (status, PIGATO_E_STORE);
    assert_non_null (strstr (error, "full"));
    pigato__store_destroy (&store);
}

static void
test_what_is_refused (void **state)
{
    (void) state;
    char error [512];
    //  A folder others may read
    assert_int_equal (mkdir (s_store, 0755), 0);
    assert_int_equal (chmod (s_store, 0755), 0);
    assert_null (pigato__store_open (s_store, 0, error, sizeof error));
    assert_non_null (strstr (error, "chmod 700"));
    assert_int_equal (chmod (s_store, 0700), 0);
    //  Not a database
    char *path = zsys_sprintf ("%s/%s", s_store, PIGATO__STORE_FILE);
    FILE *file = fopen (path, "w");
    assert_non_null (file);
    for (int index = 0; index < 4096; index++)
        fputc (index * 7, file);
    fclose (file);
    assert_int_equal (chmod (path, 0600), 0);
    assert_null (pigato__store_open (s_store, 0, error, sizeof error));
    assert_non_null (strstr (error, "not a database"));
    //  Another application's database
    unlink (path);
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (path, &db), SQLITE_OK);
    assert_int_equal (sqlite3_exec (db, "CREATE TABLE t (x)", NULL, NULL, NULL),
                      SQLITE_OK);
    sqlite3_close (db);
    assert_int_equal (chmod (path, 0600), 0);
    assert_null (pigato__store_open (s_store, 0, error, sizeof error));
    assert_non_null (strstr (error, "another application"));
    //  A file others may read
    unlink (path);
    pigato__store_t *store = s_open (error, sizeof error);
    pigato__store_destroy (&store);
    assert_int_equal (chmod (path, 0644), 0);
    assert_null (pigato__store_open (s_store, 0, error, sizeof error));
    assert_non_null (strstr (error, "chmod 600"));
    free (path);
}

//  A store of format 1 (issue 17's first: a column per field, keyed by
//  the whole id) is converted at open, every field kept.
static void
test_a_format_1_store_is_converted (void **state)
{
    (void) state;
    assert_int_equal (mkdir (s_store, 0700), 0);
    char *path = zsys_sprintf ("%s/%s", s_store, PIGATO__STORE_FILE);
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (path, &db), SQLITE_OK);
    assert_int_equal (chmod (path, 0600), 0);
    const char *sql =
        "PRAGMA journal_mode=WAL;"
        "CREATE TABLE request (id BLOB PRIMARY KEY NOT NULL, identity TEXT "
        "NOT NULL, key BLOB, service TEXT NOT NULL, body_kind INTEGER NOT "
        "NULL, body BLOB NOT NULL, opts BLOB, created INTEGER NOT NULL, "
        "deadline INTEGER NOT NULL, keep INTEGER NOT NULL, replied INTEGER, "
        "status INTEGER, reply BLOB) WITHOUT ROWID;"
        "PRAGMA application_id=1346847060; PRAGMA user_version=1;"
        "INSERT INTO request VALUES (X'0101010101010101AAAAAAAAAAAAAAAA', "
        "'alice', X'6B2D31', 'echo', 1, X'0102', '{\"a\":1}', 11, 12, 13, "
        "NULL, NULL, NULL);"
        "INSERT INTO request VALUES (X'0202020202020202BBBBBBBBBBBBBBBB', "
        "'bob', NULL, 'e2', 0, X'', NULL, 21, 22, 23, 1500, -1, 'oops');"
        "INSERT INTO request VALUES (X'0303', 'eve', NULL, 'x', 0, X'', NULL, "
        "0, 0, 0, NULL, NULL, NULL);";
    assert_int_equal (sqlite3_exec (db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close (db);
    char error [512];
    pigato__store_t *store = s_open (error, sizeof error);
    s_found_t found = { 0 };
    assert_int_equal (
        pigato__store_load (store, s_collect, &found, error, sizeof error), 0);
    assert_int_equal (found.count, 2);  //  the short id is not one of ours
    for (int at = 0; at < found.count; at++) {
        pigato__store_row_t *row = &found.rows [at];
        if (row->id [0] == 1) {
            assert_int_equal (row->id [15], 0xAA);
            assert_false (row->replied);
            assert_int_equal (row->body_kind, PIGATO__STORE_BODY_FRAMES);
            assert_string_equal (found.bodies [at], "\x01\x02");
            assert_int_equal (row->key_size, 3);
            assert_int_equal (row->opts_size, 7);
            assert_int_equal (row->created, 11);
            assert_int_equal (row->deadline, 12);
            assert_int_equal (row->keep, 13);
        }
        else {
            assert_int_equal (row->id [15], 0xBB);
            assert_true (row->replied);
            assert_int_equal (row->replied_at, 1500);
            assert_int_equal (row->status, -1);
            assert_string_equal (found.replies [at], "oops");
            assert_int_equal (row->key_size, 0);
            assert_int_equal (row->opts_size, 0);
        }
    }
    //  Written in the new format from now on, and reopened as such
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    pigato__store_batch_t *batch = pigato__store_batch_new ();
    pigato__store_row_t row = s_row (4, "new");
    assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    pigato__store_destroy (&store);
    store = s_open (error, sizeof error);
    memset (&found, 0, sizeof found);
    assert_int_equal (
        pigato__store_load (store, s_collect, &found, error, sizeof error), 0);
    assert_int_equal (found.count, 3);
    pigato__store_destroy (&store);
    assert_int_equal (sqlite3_open (path, &db), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "PRAGMA user_version", -1, &stmt,
                                          NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int (stmt, 0), PIGATO__STORE_FORMAT);
    sqlite3_finalize (stmt);
    sqlite3_close (db);
    free (path);
}

//  A row's packed columns are read back as written; anything shorter,
//  longer or damaged is refused (a row the load skips), never read past.
static void
test_damaged_rows_are_skipped (void **state)
{
    (void) state;
    pigato__store_row_t row = s_row (2, "body"), back;
    row.key = (const byte *) "k";
    row.key_size = 1;
    size_t size = pigato__store_meta_size (&row);
    byte meta [256], copy [256];
    assert_true (size <= sizeof meta);
    pigato__store_meta_pack (&row, meta);
    memset (&back, 0, sizeof back);
    assert_true (pigato__store_meta_unpack (pigato__store_seq (row.id), meta,
                                            size, &back));
    assert_memory_equal (back.id, row.id, PIGATO__STORE_ID_SIZE);
    assert_string_equal (back.identity, "alice");
    assert_string_equal (back.service, "echo");
    assert_int_equal (back.key_size, 1);
    assert_int_equal (back.opts_size, 7);
    assert_int_equal (back.deadline, 2002);
    for (size_t cut = 0; cut < size; cut++)
        assert_false (pigato__store_meta_unpack (1, meta, cut, &back));
    //  Every single byte changed: read or refused, never past the end
    //  (valgrind and the sanitizers watch)
    for (size_t at = 0; at < size; at++)
        for (int value = 0; value < 256; value += 17) {
            memcpy (copy, meta, size);
            copy [at] = (byte) value;
            byte *exact = (byte *) malloc (size);
            memcpy (exact, copy, size);
            pigato__store_meta_unpack (1, exact, size, &back);
            free (exact);
        }
    assert_false (
        pigato__store_reply_unpack ((const byte *) "short", 5, &back));
    //  In a store: only the good row comes back
    char error [512];
    pigato__store_t *store = s_open (error, sizeof error);
    assert_int_equal (pigato__store_start (store, 0, error, sizeof error), 0);
    pigato__store_batch_t *batch = pigato__store_batch_new ();
    assert_int_equal (pigato__store_batch_insert (batch, &row), 0);
    assert_int_equal (s_write (store, batch, error, sizeof error), 0);
    pigato__store_destroy (&store);
    char *path = zsys_sprintf ("%s/%s", s_store, PIGATO__STORE_FILE);
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open (path, &db), SQLITE_OK);
    assert_int_equal (sqlite3_exec (db,
                                    "INSERT INTO request VALUES (7, X'0102', "
                                    "X'', NULL); INSERT INTO request VALUES "
                                    "(8, 'text', X'', NULL);",
                                    NULL, NULL, NULL),
                      SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db,
                                          "INSERT INTO request VALUES (9, ?1, "
                                          "X'', X'0102')",
                                          -1, &stmt, NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_bind_blob (stmt, 1, meta, (int) size, NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_DONE);
    sqlite3_finalize (stmt);
    sqlite3_close (db);
    free (path);
    store = s_open (error, sizeof error);
    s_found_t found = { 0 };
    assert_int_equal (
        pigato__store_load (store, s_collect, &found, error, sizeof error), 0);
    assert_int_equal (found.count, 1);
    assert_string_equal (found.bodies [0], "body");
    pigato__store_destroy (&store);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup (test_batches_survive_a_reopen, fresh),
        cmocka_unit_test_setup (test_batches_queue_and_come_back_in_order,
                                fresh),
        cmocka_unit_test_setup (test_commits_come_back_synced, fresh),
        cmocka_unit_test_setup (test_a_failed_sync_stops_the_store, fresh),
        cmocka_unit_test_setup (test_an_interval_syncs_behind_the_commits,
                                fresh),
        cmocka_unit_test_setup (test_a_large_batch_commits, fresh),
        cmocka_unit_test_setup (test_a_capped_store_fills_up_and_says_so,
                                fresh),
        cmocka_unit_test_setup (test_what_is_refused, fresh),
        cmocka_unit_test_setup (test_a_format_1_store_is_converted, fresh),
        cmocka_unit_test_setup (test_damaged_rows_are_skipped, fresh),
    };
    return cmocka_run_group_tests (tests, setup, teardown);
}
