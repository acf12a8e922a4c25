/*  =========================================================================
    store.c - the durable store (store.h): SQLite in WAL mode, one
    connection, used by the opening thread until pigato__store_start and
    by the store thread after it; from then COMMIT only writes the WAL
    (synchronous=NORMAL) and two sync threads fdatasync it behind the
    store thread (synchronous=FULL, COMMIT syncing, until then, and for
    good if no descriptor of the WAL can be opened). With a sync interval
    (pigato-broker --store-sync MS) a batch goes back once committed and
    one sync thread fdatasyncs the WAL every MS at most. The threads meet
    only at the hand-offs (a mutex held for a pointer swap, conditions the
    store and sync threads sleep on, an eventfd the broker's poll wakes
    on).
    =========================================================================
*/
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include "store.h"
#include "store_format.h"
#include "store_vfs.h"

//  One operation: its id and the bytes it writes (store_format.h),
//  packed by the routing thread when it is added.
typedef struct {
    int type;  //  pigato__store_op_t
    byte id [PIGATO__STORE_ID_SIZE];
    byte *data;        //  INSERT: meta, then body; REPLY: the reply column
    size_t meta_size;  //  INSERT: meta's bytes
    size_t size;       //  data's bytes
} s_op_t;

//  Consecutive insertions go INSERT_ROWS to a statement: one cursor
//  appends them all (the statement keeps its place in the table) instead
//  of a seek from the root for each, and one statement's overhead
#define INSERT_ROWS 16

//  Sync threads: two, so that a commit that ends during a sync has its
//  own begin at once rather than after it
#define SYNCERS 2

struct _pigato__store_batch_t {
    struct _pigato__store_batch_t *next;  //  in a hand-off queue
    uint64_t number;                      //  its commit's (store thread)
    s_op_t *ops;
    size_t count;
    size_t max;
    size_t bytes;      //  variable bytes held
    int status;        //  once done: 0 or PIGATO_E_STORE
    char error [256];  //  SQLite's reason
};

struct _pigato__store_t {
    sqlite3 *db;
    char *path;                 //  the database file
    sqlite3_stmt *insert;       //  prepared statements
    sqlite3_stmt *insert_rows;  //  INSERT_ROWS rows at once
    sqlite3_stmt *reply;
    sqlite3_stmt *remove;
    sqlite3_stmt *begin;
    sqlite3_stmt *commit;
    pthread_t thread;  //  the store thread, once started
    bool started;
    pthread_mutex_t lock;         //  guards the three fields below
    pthread_cond_t wake;          //  the store thread waits on it
    pigato__store_batch_t *todo;  //  handed over, not yet taken (a queue)
    pigato__store_batch_t *done;  //  written (or failed), not yet taken
    bool stopping;
    int event;           //  eventfd: a batch is done
    int wal_pages;       //  in the WAL after the last commit (store thread)
    int64_t commits;     //  transactions committed (guarded too)
    int64_t operations;  //  operations they held (guarded too)
    //  The sync threads (when syncing): SQLite commits without a sync
    //  (synchronous=NORMAL) and these fdatasync the WAL behind it. A sync
    //  covers every commit that ended before it began; two may run at
    //  once (a commit need not wait for the sync under way to end before
    //  its own begins). Each has its own descriptor: Linux reports a
    //  write error to each open file once, so one thread cannot take
    //  another's error. The fields below are guarded by lock too.
    bool syncing;
    int64_t interval;  //  ms between syncs, batches back unsynced; 0: none
    int sync_fds [SYNCERS];
    pthread_t syncers [SYNCERS];
    int syncers_started;
    pthread_cond_t sync_wake;         //  the sync threads wait on it
    pigato__store_batch_t *unsynced;  //  committed, in order, not yet back
    bool sync_stopping;
    uint64_t written;      //  commits so far (the last one's number)
    uint64_t pending;      //  the last commit that wrote (needs a sync)
    uint64_t covered;      //  the last commit a sync under way or done covers
    uint64_t durable;      //  the last commit a finished sync covered
    int64_t syncs;         //  fdatasync calls made
    atomic_int unwritten;  //  batches handed over, not yet committed
    char broken [256];     //  why the store takes nothing more, or ""
};

//  --------------------------------------------------------------------------
//  Opening

//  Writes "what: SQLite's reason" to error; returns PIGATO_E_STORE.
static int
s_fail (sqlite3 *db, char *error, size_t error_size, const char *what)
{
    pigato__errorf (error, error_size, "%s: %s", what,
                    db ? sqlite3_errmsg (db) : "out of memory");
    return PIGATO_E_STORE;
}

//  Runs SQL that returns no rows we need.
static int
s_exec (pigato__store_t *self, const char *sql, char *error, size_t error_size,
        const char *what)
{
    if (sqlite3_exec (self->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return s_fail (self->db, error, error_size, what);
    return 0;
}

//  The integer a pragma (or any one-value query) returns, in *value.
static int
s_query_int (pigato__store_t *self, const char *sql, int64_t *value,
             char *error, size_t error_size, const char *what)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2 (self->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    if (rc != SQLITE_ROW) {
        s_fail (self->db, error, error_size, what);
        sqlite3_finalize (stmt);
        return PIGATO_E_STORE;
    }
    *value = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    return 0;
}

//  The folder: made 0700 if missing; else a folder nobody else may use
//  (the requests at rest are the tenants' data).
static int
s_folder (const char *dir, char *error, size_t error_size)
{
    struct stat info;
    if (stat (dir, &info) != 0) {
        if (errno != ENOENT || mkdir (dir, 0700) != 0) {
            pigato__errorf (error, error_size,
                            "cannot create the store folder '%s': %s", dir,
                            strerror (errno));
            return PIGATO_E_STORE;
        }
        return 0;
    }
    if (!S_ISDIR (info.st_mode)) {
        pigato__errorf (error, error_size,
                        "store '%s' is not a folder (--store takes a folder; "
                        "the database is %s in it)",
                        dir, PIGATO__STORE_FILE);
        return PIGATO_E_STORE;
    }
    if (info.st_mode & 077) {
        pigato__errorf (error, error_size,
                        "store folder '%s' is open to group or others (mode "
                        "%04o): it holds requests at rest; chmod 700 '%s'",
                        dir, (unsigned) (info.st_mode & 07777), dir);
        return PIGATO_E_STORE;
    }
    //  SQLite makes its -wal and -shm files beside the database: a folder
    //  we cannot write (read-only, another owner's) is refused now
    if (access (dir, W_OK | X_OK) != 0) {
        pigato__errorf (error, error_size,
                        "store folder '%s' cannot be written: %s", dir,
                        strerror (errno));
        return PIGATO_E_STORE;
    }
    return 0;
}

//  The database file: created 0600 if missing (the folder is fsync'd
//  once the database is ready); else one nobody else may read. SQLite
//  gives its -wal file the database file's mode.
static int
s_file (const char *path, char *error, size_t error_size)
{
    struct stat info;
    if (stat (path, &info) == 0) {
        if (!S_ISREG (info.st_mode)) {
            pigato__errorf (error, error_size,
                            "store file '%s' is not a regular file", path);
            return PIGATO_E_STORE;
        }
        if (info.st_mode & 077) {
            pigato__errorf (error, error_size,
                            "store file '%s' is readable by group or others "
                            "(mode %04o); chmod 600 '%s'",
                            path, (unsigned) (info.st_mode & 07777), path);
            return PIGATO_E_STORE;
        }
        return 0;
    }
    int fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        pigato__errorf (error, error_size,
                        "cannot create the store file '%s': %s", path,
                        strerror (errno));
        return PIGATO_E_STORE;
    }
    close (fd);
    return 0;
}

//  fsyncs the folder, so that the files made in it (the database, its
//  WAL) are still there after a power loss.
static int
s_sync_folder (const char *dir, char *error, size_t error_size)
{
    int fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync (fd) != 0) {
        pigato__errorf (error, error_size,
                        "cannot sync the store folder '%s': %s", dir,
                        strerror (errno));
        if (fd >= 0)
            close (fd);
        return PIGATO_E_STORE;
    }
    close (fd);
    return 0;
}

//  Checks that the file is ours (or empty), sets the pragmas, makes the
//  schema and writes once, so that a store that cannot be written is
//  refused now rather than at the first request.
static int
s_prepare (pigato__store_t *self, int64_t max_bytes, char *error,
           size_t error_size)
{
    int64_t app_id = 0, format = 0, tables = 0, page = 0;
    char what [512];
    snprintf (what, sizeof what, "store file '%s'", self->path);
    //  Exclusive: one broker per store (two would run every request
    //  twice), and no locks taken and dropped at every commit (fcntl
    //  calls; the WAL index lives in memory, no -shm file)
    int rc = s_exec (self, "PRAGMA locking_mode=EXCLUSIVE", error, error_size,
                     what);
    if (rc == 0)
        rc = s_query_int (self, "PRAGMA application_id", &app_id, error,
                          error_size, what);
    if (rc && sqlite3_errcode (self->db) == SQLITE_BUSY) {
        pigato__errorf (error, error_size,
                        "store file '%s' is in use by another process "
                        "(another pigato-broker with this --store?)",
                        self->path);
        return PIGATO_E_STORE;
    }
    if (rc == 0)
        rc = s_query_int (self, "PRAGMA user_version", &format, error,
                          error_size, what);
    if (rc == 0)
        rc = s_query_int (self, "SELECT count(*) FROM sqlite_master", &tables,
                          error, error_size, what);
    if (rc)
        return rc;
    if (tables > 0 && app_id != PIGATO__STORE_APP_ID) {
        pigato__errorf (error, error_size,
                        "store file '%s' is a SQLite database of another "
                        "application (application_id %lld, %lld tables), "
                        "not a pigato store",
                        self->path, (long long) app_id, (long long) tables);
        return PIGATO_E_STORE;
    }
    if (app_id == PIGATO__STORE_APP_ID && format > PIGATO__STORE_FORMAT) {
        pigato__errorf (error, error_size,
                        "store file '%s' has format %lld; this pigato-broker "
                        "reads format %d",
                        self->path, (long long) format, PIGATO__STORE_FORMAT);
        return PIGATO_E_STORE;
    }
    char pragmas [256];
    snprintf (pragmas, sizeof pragmas,
              "PRAGMA application_id=%d; PRAGMA user_version=%d;",
              PIGATO__STORE_APP_ID, PIGATO__STORE_FORMAT);
    //  WAL: a commit appends to one file; FULL: and fsyncs it before
    //  COMMIT returns (NORMAL would not, in WAL mode), until the sync
    //  threads take that over at start
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2 (self->db, "PRAGMA journal_mode=WAL", -1, &stmt,
                            NULL)
            != SQLITE_OK
        || sqlite3_step (stmt) != SQLITE_ROW
        || !streq ((const char *) sqlite3_column_text (stmt, 0), "wal")) {
        rc = s_fail (self->db, error, error_size, what);
        sqlite3_finalize (stmt);
        return rc;
    }
    sqlite3_finalize (stmt);
    rc = s_exec (self, "PRAGMA synchronous=FULL", error, error_size, what);
    //  A checkpoint gives the WAL's space back past 64 MiB (a burst must
    //  not keep the disk it took)
    int64_t limit = 0;
    if (rc == 0)
        rc = s_query_int (self, "PRAGMA journal_size_limit=67108864", &limit,
                          error, error_size, what);
    if (rc == 0 && max_bytes > 0)
        rc = s_query_int (self, "PRAGMA page_size", &page, error, error_size,
                          what);
    if (rc == 0 && max_bytes > 0) {
        char limit [64];
        int64_t pages = max_bytes / (page > 0 ? page : 4096);
        snprintf (limit, sizeof limit, "PRAGMA max_page_count=%lld",
                  (long long) (pages > 2 ? pages : 2));
        int64_t applied = 0;
        rc = s_query_int (self, limit, &applied, error, error_size, what);
    }
    if (rc == 0)
        rc = s_exec (self, "BEGIN IMMEDIATE", error, error_size, what);
    if (rc == 0) {
        if (app_id == PIGATO__STORE_APP_ID && format == 1) {
            rc = pigato__store_convert_1 (self->db, error, error_size);
            if (rc)
                pigato__errorf (error + strlen (error),
                                error_size - strlen (error),
                                " (store file '%s')", self->path);
        }
        else
            rc = s_exec (
                self,
                "CREATE TABLE IF NOT EXISTS request " PIGATO__STORE_COLUMNS,
                error, error_size, what);
        if (rc == 0)
            rc = s_exec (self, pragmas, error, error_size, what);
        if (rc == 0)
            rc = s_exec (self, "COMMIT", error, error_size, what);
        if (rc)
            sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
    }
    return rc;
}

pigato__store_t *
pigato__store_open (const char *dir, int64_t max_bytes, char *error,
                    size_t error_size)
{
    if (!dir || !*dir) {
        pigato__errorf (error, error_size, "no store folder given");
        return NULL;
    }
    pigato__store_t *self = (pigato__store_t *) calloc (1, sizeof *self);
    if (!self) {
        pigato__errorf (error, error_size, "out of memory");
        return NULL;
    }
    self->event = -1;
    for (int index = 0; index < SYNCERS; index++)
        self->sync_fds [index] = -1;
    pthread_mutex_init (&self->lock, NULL);
    pthread_cond_init (&self->wake, NULL);
    //  Monotonic: the interval sync thread waits on it with a deadline
    pthread_condattr_t monotonic;
    pthread_condattr_init (&monotonic);
    pthread_condattr_setclock (&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init (&self->sync_wake, &monotonic);
    pthread_condattr_destroy (&monotonic);
    self->path = zsys_sprintf ("%s/%s", dir, PIGATO__STORE_FILE);
    int rc = self->path ? 0 : PIGATO_E_NOMEM;
    if (rc == 0)
        rc = s_folder (dir, error, error_size);
    if (rc == 0)
        rc = s_file (self->path, error, error_size);
    if (rc == 0
        && sqlite3_open_v2 (self->path, &self->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                            pigato__store_vfs ())
               != SQLITE_OK) {
        char what [512];
        snprintf (what, sizeof what, "cannot open the store file '%s'",
                  self->path);
        rc = s_fail (self->db, error, error_size, what);
    }
    if (rc == 0) {
        sqlite3_extended_result_codes (self->db, 1);
        sqlite3_busy_timeout (self->db, 1000);  //  a brief holder (sqlite3)
        rc = s_prepare (self, max_bytes, error, error_size);
    }
    if (rc == 0)
        rc = s_sync_folder (dir, error, error_size);
    char rows [64 + INSERT_ROWS * 16] = "INSERT INTO request (seq, meta, "
                                        "body) VALUES (?, ?, ?)";
    for (int row = 1; row < INSERT_ROWS; row++)
        strcat (rows, ", (?, ?, ?)");
    if (rc == 0
        && (sqlite3_prepare_v3 (self->db,
                                "INSERT INTO request (seq, meta, body) "
                                "VALUES (?1, ?2, ?3)",
                                -1, SQLITE_PREPARE_PERSISTENT, &self->insert,
                                NULL)
                != SQLITE_OK
            || sqlite3_prepare_v3 (self->db, rows, -1,
                                   SQLITE_PREPARE_PERSISTENT,
                                   &self->insert_rows, NULL)
                   != SQLITE_OK
            || sqlite3_prepare_v3 (self->db, "BEGIN IMMEDIATE", -1,
                                   SQLITE_PREPARE_PERSISTENT, &self->begin,
                                   NULL)
                   != SQLITE_OK
            || sqlite3_prepare_v3 (self->db, "COMMIT", -1,
                                   SQLITE_PREPARE_PERSISTENT, &self->commit,
                                   NULL)
                   != SQLITE_OK
            || sqlite3_prepare_v3 (self->db,
                                   "UPDATE request SET reply = ?2, body = X'' "
                                   "WHERE seq = ?1",
                                   -1, SQLITE_PREPARE_PERSISTENT, &self->reply,
                                   NULL)
                   != SQLITE_OK
            || sqlite3_prepare_v3 (
                   self->db, "DELETE FROM request WHERE seq = ?1", -1,
                   SQLITE_PREPARE_PERSISTENT, &self->remove, NULL)
                   != SQLITE_OK))
        rc = s_fail (self->db, error, error_size, "store statements");
    if (rc == 0) {
        self->event = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (self->event < 0) {
            pigato__errorf (error, error_size, "eventfd: %s", strerror (errno));
            rc = PIGATO_E_SYSTEM;
        }
    }
    if (rc) {
        if (rc == PIGATO_E_NOMEM)
            pigato__errorf (error, error_size, "out of memory");
        pigato__store_destroy (&self);
    }
    return self;
}

void
pigato__store_destroy (pigato__store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__store_t *self = *self_p;
    if (self->started) {
        pthread_mutex_lock (&self->lock);
        self->stopping = true;
        pthread_cond_signal (&self->wake);
        pthread_mutex_unlock (&self->lock);
        pthread_join (self->thread, NULL);
    }
    //  After the store thread: what it committed is synced first
    if (self->syncers_started) {
        pthread_mutex_lock (&self->lock);
        self->sync_stopping = true;
        pthread_cond_broadcast (&self->sync_wake);
        pthread_mutex_unlock (&self->lock);
        for (int index = 0; index < self->syncers_started; index++)
            pthread_join (self->syncers [index], NULL);
    }
    for (int index = 0; index < SYNCERS; index++)
        if (self->sync_fds [index] >= 0)
            close (self->sync_fds [index]);
    pigato__store_batch_t **queues [] = { &self->todo, &self->unsynced,
                                          &self->done };
    for (size_t index = 0; index < sizeof queues / sizeof queues [0]; index++)
        for (pigato__store_batch_t **queue = queues [index]; *queue;) {
            pigato__store_batch_t *batch = *queue;
            *queue = batch->next;
            pigato__store_batch_destroy (&batch);
        }
    sqlite3_finalize (self->insert);
    sqlite3_finalize (self->insert_rows);
    sqlite3_finalize (self->reply);
    sqlite3_finalize (self->remove);
    sqlite3_finalize (self->begin);
    sqlite3_finalize (self->commit);
    sqlite3_close (self->db);
    if (self->event >= 0)
        close (self->event);
    pthread_cond_destroy (&self->wake);
    pthread_cond_destroy (&self->sync_wake);
    pthread_mutex_destroy (&self->lock);
    free (self->path);
    free (self);
    *self_p = NULL;
}

int
pigato__store_load (pigato__store_t *self, pigato__store_row_fn *row_fn,
                    void *arg, char *error, size_t error_size)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2 (self->db,
                                 "SELECT seq, meta, body, reply FROM request",
                                 -1, &stmt, NULL);
    char what [512];
    snprintf (what, sizeof what, "cannot read the store file '%s'", self->path);
    if (rc != SQLITE_OK)
        return s_fail (self->db, error, error_size, what);
    int status = 0;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        pigato__store_row_t row;
        memset (&row, 0, sizeof row);
        //  A row that is not a packed request is skipped
        if (!pigato__store_meta_unpack (
                sqlite3_column_int64 (stmt, 0),
                (const byte *) sqlite3_column_blob (stmt, 1),
                (size_t) sqlite3_column_bytes (stmt, 1), &row))
            continue;
        row.body = (const byte *) sqlite3_column_blob (stmt, 2);
        row.body_size = (size_t) sqlite3_column_bytes (stmt, 2);
        if (sqlite3_column_type (stmt, 3) != SQLITE_NULL
            && !pigato__store_reply_unpack (
                (const byte *) sqlite3_column_blob (stmt, 3),
                (size_t) sqlite3_column_bytes (stmt, 3), &row))
            continue;
        status = row_fn (arg, &row);
        if (status)
            break;
    }
    if (!status && rc != SQLITE_DONE)
        status = s_fail (self->db, error, error_size, what);
    sqlite3_finalize (stmt);
    return status;
}

//  --------------------------------------------------------------------------
//  The store thread

//  Runs one operation's statement.
static int
s_apply_op (pigato__store_t *self, const s_op_t *op)
{
    sqlite3_stmt *stmt = op->type == PIGATO__STORE_INSERT ? self->insert
                       : op->type == PIGATO__STORE_REPLY  ? self->reply
                                                          : self->remove;
    int rc = sqlite3_bind_int64 (stmt, 1, pigato__store_seq (op->id));
    if (rc == SQLITE_OK && op->type == PIGATO__STORE_INSERT)
        rc = sqlite3_bind_blob64 (stmt, 2, op->data, op->meta_size,
                                  SQLITE_STATIC);
    if (rc == SQLITE_OK && op->type == PIGATO__STORE_INSERT)
        rc = sqlite3_bind_blob64 (stmt, 3, op->data + op->meta_size,
                                  op->size - op->meta_size, SQLITE_STATIC);
    if (rc == SQLITE_OK && op->type == PIGATO__STORE_REPLY)
        rc = sqlite3_bind_blob64 (stmt, 2, op->data, op->size, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    sqlite3_reset (stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

//  Runs INSERT_ROWS insertions in one statement.
static int
s_insert_rows (pigato__store_t *self, const s_op_t *ops)
{
    sqlite3_stmt *stmt = self->insert_rows;
    int rc = SQLITE_OK;
    for (int row = 0; rc == SQLITE_OK && row < INSERT_ROWS; row++) {
        const s_op_t *op = &ops [row];
        rc = sqlite3_bind_int64 (stmt, 3 * row + 1, pigato__store_seq (op->id));
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob64 (stmt, 3 * row + 2, op->data,
                                      op->meta_size, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob64 (stmt, 3 * row + 3,
                                      op->data + op->meta_size,
                                      op->size - op->meta_size, SQLITE_STATIC);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_step (stmt);
    sqlite3_reset (stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

//  Steps a statement that returns no row (BEGIN, COMMIT).
static int
s_step (sqlite3_stmt *stmt)
{
    int rc = sqlite3_step (stmt);
    sqlite3_reset (stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

//  Writes a batch in one transaction; on any failure rolls it back and
//  says why in the batch.
static void
s_apply (pigato__store_t *self, pigato__store_batch_t *batch)
{
    const char *step = "BEGIN";
    int rc = s_step (self->begin);
    for (size_t index = 0; rc == SQLITE_OK && index < batch->count;) {
        const s_op_t *op = &batch->ops [index];
        size_t run = 0;
        while (run < INSERT_ROWS && index + run < batch->count
               && op [run].type == PIGATO__STORE_INSERT)
            run++;
        step = op->type == PIGATO__STORE_INSERT ? "INSERT"
             : op->type == PIGATO__STORE_REPLY  ? "UPDATE"
                                                : "DELETE";
        if (run == INSERT_ROWS) {
            rc = s_insert_rows (self, op);
            index += run;
        }
        else {
            rc = s_apply_op (self, op);
            index++;
        }
    }
    if (rc == SQLITE_OK) {
        step = "COMMIT";
        rc = s_step (self->commit);
    }
    if (rc == SQLITE_OK) {
        batch->status = 0;
        return;
    }
    snprintf (batch->error, sizeof batch->error, "%s failed: %s (%s)", step,
              sqlite3_errmsg (self->db), sqlite3_errstr (rc & 0xff));
    batch->status = PIGATO_E_STORE;
    if (!sqlite3_get_autocommit (self->db))
        sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
}

//  Appends a batch to a queue.
static void
s_append (pigato__store_batch_t **queue, pigato__store_batch_t *batch)
{
    while (*queue)
        queue = &(*queue)->next;
    *queue = batch;
}

//  A batch is done (on disk if ok): back to the routing thread, oldest
//  first. With lock held.
static void
s_finish (pigato__store_t *self, pigato__store_batch_t *batch, bool ok)
{
    if (ok) {
        self->commits++;
        self->operations += (int64_t) batch->count;
    }
    s_append (&self->done, batch);
    //  A failed write leaves the counter set: the broker wakes anyway
    uint64_t one = 1;
    ssize_t written = write (self->event, &one, sizeof one);
    (void) written;
}

//  The store takes nothing more: every batch from now on fails with
//  reason, and so do the committed ones not yet synced. With lock held.
//  Once an fsync has failed, Linux may have dropped the pages it could
//  not write and a second fsync succeeds: trying again would acknowledge
//  what is not on disk.
static void
s_break (pigato__store_t *self, const char *reason)
{
    if (!self->broken [0])
        snprintf (self->broken, sizeof self->broken,
                  "%s; the store takes nothing more until the broker "
                  "restarts",
                  reason);
    for (pigato__store_batch_t *batch = self->unsynced; batch;
         batch = batch->next)
        if (batch->status == 0) {
            batch->status = PIGATO_E_STORE;
            snprintf (batch->error, sizeof batch->error, "%s", self->broken);
        }
}

//  Hands back, in order, the committed batches that are on disk (or
//  failed: those need no sync, only the ones before them). With lock held.
static void
s_deliver (pigato__store_t *self)
{
    pigato__store_batch_t *batch;
    while ((batch = self->unsynced)
           && (batch->status != 0 || batch->number <= self->durable)) {
        self->unsynced = batch->next;
        batch->next = NULL;
        s_finish (self, batch, batch->status == 0);
    }
}

//  After a COMMIT without a sync: writes what the VFS gathered of the WAL
//  (the sync thread's fdatasync then finds it in the file). A failure
//  here is after the COMMIT: the store breaks.
static void
s_flush_wal (pigato__store_t *self, pigato__store_batch_t *batch)
{
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control (self->db, "main",
                                   SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc == SQLITE_OK)
        rc = pigato__store_vfs_flush (wal);
    if (rc == SQLITE_OK)
        return;
    char reason [200];
    snprintf (reason, sizeof reason, "writing the WAL failed: %s",
              sqlite3_errstr (rc & 0xff));
    pthread_mutex_lock (&self->lock);
    s_break (self, reason);
    batch->status = PIGATO_E_STORE;
    snprintf (batch->error, sizeof batch->error, "%s", self->broken);
    pthread_mutex_unlock (&self->lock);
}

//  A sync thread: whenever commits have ended that no sync covers, one
//  fdatasync of the WAL for them all (a group commit: what was committed
//  while the last sync ran), then what it covered goes back. With an
//  interval (one such thread) the sync waits interval ms first, and the
//  batches went back at their commit already (nothing to deliver).
typedef struct {
    pigato__store_t *store;
    int fd;
} s_syncer_t;

//  With an interval (one sync thread): waits interval ms from now (the
//  first commit since the last sync woke it, or under steady load that
//  sync has just ended), or until the store stops. With lock held.
static void
s_wait_interval (pigato__store_t *self)
{
    struct timespec until;
    clock_gettime (CLOCK_MONOTONIC, &until);
    until.tv_sec += self->interval / 1000;
    until.tv_nsec += (self->interval % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    while (!self->sync_stopping
           && pthread_cond_timedwait (&self->sync_wake, &self->lock, &until)
                  != ETIMEDOUT)
        ;
}

static void *
s_syncer (void *arg)
{
    pigato__store_t *self = ((s_syncer_t *) arg)->store;
    int fd = ((s_syncer_t *) arg)->fd;
    free (arg);
    pthread_mutex_lock (&self->lock);
    while (true) {
        while (self->pending <= self->covered && !self->sync_stopping)
            pthread_cond_wait (&self->sync_wake, &self->lock);
        if (self->pending <= self->covered)
            break;  //  stopping, nothing left to cover
        if (self->interval)
            s_wait_interval (self);
        uint64_t target = self->pending;
        self->covered = target;
        pthread_mutex_unlock (&self->lock);
        int error = 0;
        while (fdatasync (fd) != 0 && (error = errno) == EINTR)
            error = 0;
        pthread_mutex_lock (&self->lock);
        self->syncs++;
        if (error) {
            char reason [200];
            snprintf (reason, sizeof reason, "fdatasync of the WAL failed: %s",
                      strerror (error));
            s_break (self, reason);
        }
        else if (!self->broken [0] && target > self->durable)
            self->durable = target;
        s_deliver (self);
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

static void *
s_thread (void *arg)
{
    pigato__store_t *self = (pigato__store_t *) arg;
    pthread_mutex_lock (&self->lock);
    while (true) {
        while (!self->todo && !self->stopping)
            pthread_cond_wait (&self->wake, &self->lock);
        if (!self->todo)
            break;  //  stopping, nothing left
        pigato__store_batch_t *batch = self->todo;
        self->todo = batch->next;
        batch->next = NULL;
        bool broken = self->broken [0] != 0;
        if (broken) {
            batch->status = PIGATO_E_STORE;
            snprintf (batch->error, sizeof batch->error, "%s", self->broken);
        }
        pthread_mutex_unlock (&self->lock);
        if (!broken)
            s_apply (self, batch);
        if (batch->status == 0 && self->syncing)
            s_flush_wal (self, batch);
        pthread_mutex_lock (&self->lock);
        atomic_fetch_sub (&self->unwritten, 1);
        if (self->syncing) {
            //  Behind the commits before it, even a failed one: batches
            //  come back in the order they were handed over
            batch->number = ++self->written;
            if (batch->status == 0) {
                self->pending = batch->number;
                pthread_cond_signal (&self->sync_wake);
            }
            if (self->interval)
                s_finish (self, batch, batch->status == 0);
            else {
                s_append (&self->unsynced, batch);
                s_deliver (self);
            }
        }
        else
            s_finish (self, batch, batch->status == 0);
        if (self->wal_pages >= PIGATO__STORE_CHECKPOINT_PAGES) {
            //  The checkpoint (the WAL's pages copied into the database,
            //  which is fsync'd) once the batch is answered, not before:
            //  SQLite's own runs inside the COMMIT that fills the WAL
            pthread_mutex_unlock (&self->lock);
            sqlite3_wal_checkpoint_v2 (self->db, NULL,
                                       SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            self->wal_pages = 0;
            pthread_mutex_lock (&self->lock);
        }
    }
    pthread_mutex_unlock (&self->lock);
    return NULL;
}

//  After each commit: the WAL's size, for the store thread's checkpoint
//  (this hook replaces SQLite's automatic one).
static int
s_wal_hook (void *arg, sqlite3 *db, const char *name, int pages)
{
    (void) db, (void) name;
    ((pigato__store_t *) arg)->wal_pages = pages;
    return SQLITE_OK;
}

int
pigato__store_start (pigato__store_t *self, int64_t interval, char *error,
                     size_t error_size)
{
    self->interval = interval > 0 ? interval : 0;
    sqlite3_wal_hook (self->db, s_wal_hook, self);
    //  The sync threads' own descriptors of the WAL (fdatasync syncs the
    //  file, whichever descriptor asks): COMMIT then does not sync
    //  (synchronous=NORMAL: in WAL mode a commit is written, not synced;
    //  a checkpoint still syncs both files), they do behind it. Without
    //  them, COMMIT syncs, as the store was opened.
    char *wal = zsys_sprintf ("%s-wal", self->path);
    int rc = wal ? 0 : ENOMEM;
    self->syncing = wal != NULL;
    for (int index = 0; self->syncing && index < SYNCERS; index++) {
        self->sync_fds [index] = open (wal, O_RDWR | O_CLOEXEC);
        self->syncing = self->sync_fds [index] >= 0;
    }
    zstr_free (&wal);
    if (self->syncing
        && sqlite3_exec (self->db, "PRAGMA synchronous=NORMAL", NULL, NULL,
                         NULL)
               != SQLITE_OK)
        self->syncing = false;
    if (!self->syncing)
        self->interval = 0;  //  COMMIT syncs
    //  One sync thread with an interval: its syncs never overlap
    int syncers = self->interval ? 1 : SYNCERS;
    for (int index = 0; rc == 0 && self->syncing && index < syncers; index++) {
        s_syncer_t *syncer = (s_syncer_t *) malloc (sizeof *syncer);
        rc = syncer ? 0 : ENOMEM;
        if (rc == 0) {
            *syncer = (s_syncer_t) { self, self->sync_fds [index] };
            rc = pthread_create (&self->syncers [index], NULL, s_syncer,
                                 syncer);
            if (rc)
                free (syncer);
        }
        if (rc == 0)
            self->syncers_started++;
    }
    if (rc == 0)
        rc = pthread_create (&self->thread, NULL, s_thread, self);
    if (rc) {
        pigato__errorf (error, error_size, "cannot start the store thread: %s",
                        strerror (rc));
        return PIGATO_E_SYSTEM;
    }
    self->started = true;
    return 0;
}

int
pigato__store_fd (pigato__store_t *self)
{
    return self->event;
}

void
pigato__store_commit (pigato__store_t *self, pigato__store_batch_t **batch_p)
{
    pthread_mutex_lock (&self->lock);
    s_append (&self->todo, *batch_p);
    *batch_p = NULL;
    atomic_fetch_add (&self->unwritten, 1);
    pthread_cond_signal (&self->wake);
    pthread_mutex_unlock (&self->lock);
}

pigato__store_batch_t *
pigato__store_done (pigato__store_t *self)
{
    //  Nothing signalled (EAGAIN): the check below says the same
    uint64_t count;
    ssize_t got = read (self->event, &count, sizeof count);
    (void) got;
    pthread_mutex_lock (&self->lock);
    pigato__store_batch_t *batch = self->done;
    if (batch) {
        self->done = batch->next;
        batch->next = NULL;
    }
    pthread_mutex_unlock (&self->lock);
    return batch;
}

int
pigato__store_unwritten (pigato__store_t *self)
{
    return atomic_load (&self->unwritten);
}

int64_t
pigato__store_interval (pigato__store_t *self)
{
    return self->interval;
}

int64_t
pigato__store_syncs (pigato__store_t *self)
{
    pthread_mutex_lock (&self->lock);
    int64_t syncs = self->syncs;
    pthread_mutex_unlock (&self->lock);
    return syncs;
}

bool
pigato__store_broken (pigato__store_t *self)
{
    pthread_mutex_lock (&self->lock);
    bool broken = self->broken [0] != 0;
    pthread_mutex_unlock (&self->lock);
    return broken;
}

void
pigato__store_fail_syncs (pigato__store_t *self)
{
    int pipe_fds [2];
    if (pipe (pipe_fds))
        return;
    for (int index = 0; index < SYNCERS; index++)
        if (self->sync_fds [index] >= 0)
            dup2 (pipe_fds [0], self->sync_fds [index]);
    close (pipe_fds [0]);
    close (pipe_fds [1]);
}

int64_t
pigato__store_commits (pigato__store_t *self)
{
    pthread_mutex_lock (&self->lock);
    int64_t commits = self->commits;
    pthread_mutex_unlock (&self->lock);
    return commits;
}

int64_t
pigato__store_operations (pigato__store_t *self)
{
    pthread_mutex_lock (&self->lock);
    int64_t operations = self->operations;
    pthread_mutex_unlock (&self->lock);
    return operations;
}

//  --------------------------------------------------------------------------
//  Batches

pigato__store_batch_t *
pigato__store_batch_new (void)
{
    return (pigato__store_batch_t *) calloc (1, sizeof (pigato__store_batch_t));
}

void
pigato__store_batch_destroy (pigato__store_batch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__store_batch_t *self = *self_p;
    for (size_t index = 0; index < self->count; index++)
        free (self->ops [index].data);
    free (self->ops);
    free (self);
    *self_p = NULL;
}

//  A new operation at the end, with room for size bytes of data.
static s_op_t *
s_op_add (pigato__store_batch_t *self, int type, const byte *id, size_t size)
{
    if (self->count == self->max) {
        size_t max = self->max ? self->max * 2 : 64;
        s_op_t *ops = (s_op_t *) realloc (self->ops, max * sizeof *ops);
        if (!ops)
            return NULL;
        self->ops = ops;
        self->max = max;
    }
    s_op_t *op = &self->ops [self->count];
    op->data = (byte *) malloc (size ? size : 1);
    if (!op->data)
        return NULL;
    op->type = type;
    memcpy (op->id, id, PIGATO__STORE_ID_SIZE);
    op->meta_size = 0;
    op->size = size;
    self->count++;
    self->bytes += size;
    return op;
}

int
pigato__store_batch_insert (pigato__store_batch_t *self,
                            const pigato__store_row_t *row)
{
    size_t meta_size = pigato__store_meta_size (row);
    s_op_t *op = s_op_add (self, PIGATO__STORE_INSERT, row->id,
                           meta_size + row->body_size);
    if (!op)
        return PIGATO_E_NOMEM;
    pigato__store_meta_pack (row, op->data);
    op->meta_size = meta_size;
    if (row->body_size)
        memcpy (op->data + meta_size, row->body, row->body_size);
    return 0;
}

int
pigato__store_batch_reply (pigato__store_batch_t *self, const byte *id,
                           int64_t replied_at, int status, const byte *reply,
                           size_t reply_size)
{
    s_op_t *op = s_op_add (self, PIGATO__STORE_REPLY, id,
                           PIGATO__STORE_REPLY_HEAD + reply_size);
    if (!op)
        return PIGATO_E_NOMEM;
    pigato__store_reply_head (replied_at, status, op->data);
    if (reply_size)
        memcpy (op->data + PIGATO__STORE_REPLY_HEAD, reply, reply_size);
    return 0;
}

int
pigato__store_batch_delete (pigato__store_batch_t *self, const byte *id)
{
    return s_op_add (self, PIGATO__STORE_DELETE, id, 0) ? 0 : PIGATO_E_NOMEM;
}

size_t
pigato__store_batch_size (const pigato__store_batch_t *self)
{
    return self->count;
}

size_t
pigato__store_batch_bytes (const pigato__store_batch_t *self)
{
    return self->bytes;
}

int
pigato__store_batch_op (const pigato__store_batch_t *self, size_t index,
                        const byte **id)
{
    *id = self->ops [index].id;
    return self->ops [index].type;
}

int
pigato__store_batch_status (const pigato__store_batch_t *self,
                            const char **error)
{
    *error = self->error;
    return self->status;
}
