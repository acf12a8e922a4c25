/*  =========================================================================
    store.h - the durable store behind titanic.c: durable requests and
    their replies in one SQLite file (WAL) in a folder of its own,
    written by a thread of its own and synced by two more. Not installed.

    The routing thread never waits on the disk. It collects what its loop
    changes (new requests, replies, deletions) in a batch and hands it
    over (pigato__store_commit): at the end of a turn when the store
    thread has nothing to write (pigato__store_unwritten), or once it
    holds 64 operations, queued behind the write under way (titanic.c).
    The store thread writes each in one transaction (COMMIT writes the
    WAL, synchronous=NORMAL), the sync threads fdatasync the WAL behind
    it (one sync covers every commit that ended before it began), and a
    batch comes back once a sync that began after its commit returned
    (pigato__store_done, oldest first; pigato__store_fd turns readable).
    While batches are being written and synced the next one grows
    (group commit). A batch belongs to one thread at a time, so the
    threads share nothing but the hand-offs.

    This is the only file that knows SQL (with store_format.c, its rows,
    and store_vfs.c, its writes). A store for several brokers
    (PostgreSQL, FOR UPDATE SKIP LOCKED) would implement this interface
    (docs/architecture.md, "Durable requests").
    =========================================================================
*/
#ifndef PIGATO_STORE_H_INCLUDED
#define PIGATO_STORE_H_INCLUDED

#include "../base/internal.h"

#define PIGATO__STORE_FILE             "titanic.db"  //  inside the store folder
#define PIGATO__STORE_FORMAT           2             //  PRAGMA user_version
#define PIGATO__STORE_APP_ID           0x50474154  //  PRAGMA application_id: "PGAT"
#define PIGATO__STORE_ID_SIZE          16    //  a durable request's id, bytes
#define PIGATO__STORE_CHECKPOINT_PAGES 1000  //  WAL pages that make one
//  The WAL file's size from its creation: those pages with their frame
//  headers, and room for the batch that passes them (store_vfs.c)
#define PIGATO__STORE_WAL_PRESIZE (6 * 1024 * 1024)

typedef struct _pigato__store_t pigato__store_t;
typedef struct _pigato__store_batch_t pigato__store_batch_t;

//  How a stored request's body is kept: one body, or MDP frames packed
//  (mdp.h, pigato__mdp_pack). Replies are always packed frames.
typedef enum {
    PIGATO__STORE_BODY_ONE = 0,
    PIGATO__STORE_BODY_FRAMES = 1
} pigato__store_body_t;

//  One stored request, as the store reads and writes it. Borrowed.
typedef struct {
    byte id [PIGATO__STORE_ID_SIZE];
    const char *identity;  //  who submitted it
    const byte *key;       //  its idempotency key, NULL if none
    size_t key_size;
    const char *service;  //  the service it is for
    int body_kind;        //  pigato__store_body_t
    const byte *body;     //  empty once replied (no longer needed)
    size_t body_size;
    const byte *opts;  //  opts for the worker (JSON object), NULL if none
    size_t opts_size;
    int64_t created;   //  ms since the epoch
    int64_t deadline;  //  no final reply by then: E_EXPIRED
    int64_t keep;      //  ms a reply is kept once it came
    bool replied;      //  the final reply is stored
    int64_t replied_at;
    int status;  //  its status: 0 or -1 (an error)
    const byte *reply;
    size_t reply_size;  //  packed frames
} pigato__store_row_t;

//  Opens (creates) the store in folder dir: the folder is made 0700 if
//  missing, the file titanic.db 0600. Refused, with the reason in error:
//  a folder or file that group or others may use, a file that is not a
//  SQLite database or is another application's, a newer format, a folder
//  or file that cannot be written (read-only, full). max_bytes > 0 caps
//  the database file (SQLite's max_page_count): past it writes fail as on
//  a full disk. Reads nothing yet. NULL on failure.
pigato__store_t *pigato__store_open (const char *dir, int64_t max_bytes,
                                     char *error, size_t error_size);

//  Stops the thread (a batch being written is finished first), closes
//  the database, frees batches still held.
void pigato__store_destroy (pigato__store_t **self_p);

//  Recovery, before start: calls row once per stored request (borrowed
//  for the call). A non-zero return from row stops the walk and is
//  returned. PIGATO_E_STORE if the database cannot be read (error says
//  why, e.g. a corrupt file).
typedef int (pigato__store_row_fn) (void *arg, const pigato__store_row_t *row);
int pigato__store_load (pigato__store_t *self, pigato__store_row_fn *row,
                        void *arg, char *error,
                        size_t error_size) PIGATO__MUST_CHECK;

//  Starts the store thread and the sync threads. interval 0: a batch
//  comes back once fdatasync'd; interval > 0: once committed (written to
//  the operating system), and the WAL is fdatasync'd every interval ms
//  at most. 0 or PIGATO_E_SYSTEM.
int pigato__store_start (pigato__store_t *self, int64_t interval, char *error,
                         size_t error_size) PIGATO__MUST_CHECK;

//  A file descriptor that turns readable when a batch is done.
int pigato__store_fd (pigato__store_t *self);

//  Hands a batch to the store thread (takes it; *batch_p is NULLed): it
//  is written after those handed over before it.
void pigato__store_commit (pigato__store_t *self,
                           pigato__store_batch_t **batch_p);

//  The oldest batch the thread finished, or NULL (never waits; call
//  again until NULL). Its status says whether it is on disk; the caller
//  destroys it.
pigato__store_batch_t *pigato__store_done (pigato__store_t *self);

//  Transactions committed so far, and the operations they held
//  (counters: their ratio is the group commit's size).
int64_t pigato__store_commits (pigato__store_t *self);

//  Batches handed over and not yet committed (synced or not): 0 when the
//  store thread is idle or only waits for a sync.
int pigato__store_unwritten (pigato__store_t *self);

//  Milliseconds between syncs (pigato__store_start), 0 if each commit
//  is synced before its batch comes back.
int64_t pigato__store_interval (pigato__store_t *self);

//  The fdatasync calls the sync threads made (0 if COMMIT syncs itself:
//  no descriptor of the WAL could be opened at start).
int64_t pigato__store_syncs (pigato__store_t *self);

//  True once the store takes nothing more (a failed fdatasync, or a
//  write of the WAL that failed after COMMIT) until the broker restarts.
bool pigato__store_broken (pigato__store_t *self);

//  For tests: the sync threads' descriptors of the WAL become ones that
//  cannot be synced (a pipe's: fdatasync fails with EINVAL), as on a disk
//  whose writes fail. After start.
void pigato__store_fail_syncs (pigato__store_t *self);
int64_t pigato__store_operations (pigato__store_t *self);

//  --------------------------------------------------------------------------
//  Batches: made and filled by the routing thread, written by the store
//  thread. Every call copies what it is given.

typedef enum {
    PIGATO__STORE_INSERT = 1,  //  a new request
    PIGATO__STORE_REPLY = 2,   //  its final reply (the body is dropped)
    PIGATO__STORE_DELETE = 3   //  closed, or kept long enough
} pigato__store_op_t;

pigato__store_batch_t *pigato__store_batch_new (void);
void pigato__store_batch_destroy (pigato__store_batch_t **self_p);

//  Adds an operation. 0 or PIGATO_E_NOMEM.
int
pigato__store_batch_insert (pigato__store_batch_t *self,
                            const pigato__store_row_t *row) PIGATO__MUST_CHECK;
int pigato__store_batch_reply (pigato__store_batch_t *self, const byte *id,
                               int64_t replied_at, int status,
                               const byte *reply,
                               size_t reply_size) PIGATO__MUST_CHECK;
int pigato__store_batch_delete (pigato__store_batch_t *self,
                                const byte *id) PIGATO__MUST_CHECK;

//  Operations held, and their bytes (bodies, opts, replies).
size_t pigato__store_batch_size (const pigato__store_batch_t *self);
size_t pigato__store_batch_bytes (const pigato__store_batch_t *self);

//  Operation index: its kind (pigato__store_op_t) and id (borrowed).
int pigato__store_batch_op (const pigato__store_batch_t *self, size_t index,
                            const byte **id);

//  Once done: 0 if every operation is on disk, else PIGATO_E_STORE and
//  none is (the transaction rolled back), with SQLite's reason.
int pigato__store_batch_status (const pigato__store_batch_t *self,
                                const char **error);

#endif
