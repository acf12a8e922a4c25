/*  =========================================================================
    titanic.h - durable requests (ZeroMQ RFC 9, Titanic) answered by the
    broker itself when it has a store (--store): titanic.request,
    titanic.reply and titanic.close, for every framing. Not installed.

    titanic.c holds the records, their writes to the store (store.h) and
    their recovery; titanic_service.c answers the three services (an id
    only once its request is on disk); titanic_run.c hands stored
    requests to the routing core like any client's (core.h), with retries
    and backoff until a final reply or their time to live, takes their
    replies, and keeps the timers.

    A durable request's record moves through one state at a time:

        COMMITTING --stored--> WAITING --attempt--> IN_FLIGHT
                                 ^  (backoff)            |
                                 +-- worker lost, ... ---+
                               final reply, error, expiry v
        DELETING <--close, kept long enough-- REPLIED <--stored-- REPLYING

    A WAITING record whose service no worker can serve is parked: it waits
    in titanic, not in the core (no request, no attempt timeout, no
    retries), until a worker registers that can take it.

    A close waits for an attempt in flight to end (so nothing runs after
    its answer) and for a reply being stored; its deletion is stored
    before it is answered. The core sees a durable request as a client's
    on the connection PIGATO__CONN_TITANIC (no socket): send.c hands its
    replies and errors here instead of to a peer.
    =========================================================================
*/
#ifndef PIGATO_TITANIC_H_INCLUDED
#define PIGATO_TITANIC_H_INCLUDED

#include "core.h"
#include "store.h"

//  The connection (fd) of the requests titanic hands to the core: not a
//  socket (fd -1 is a peer whose connection is unknown).
#define PIGATO__CONN_TITANIC (-2)

//  An id is 16 bytes, shown as 32 lowercase hex digits (RFC 9: 32 hex
//  characters; either case is read): 8 that grow with time (ms << 16,
//  plus one for each id in the same ms), so that the store appends its
//  rows instead of writing a random page for each, and 8 random ones.
//  The first 8 are unique in a store (the store keys rows by them): each
//  id's are above the last one's, and above every stored row's.
//  Ids are names, not secrets: only the identity that stored a request
//  can read or close it.
#define PIGATO__TITANIC_ID_TEXT 32

//  Limits and defaults (docs/protocol.md, "Durable requests")
#define PIGATO__TITANIC_KEY_MAX      64  //  idempotency key, bytes
#define PIGATO__TITANIC_TTL_DEFAULT  (24LL * 3600 * 1000)  //  ms to a reply
#define PIGATO__TITANIC_KEEP_DEFAULT (24LL * 3600 * 1000)  //  ms kept after
#define PIGATO__TITANIC_TIME_MAX     (30LL * 24 * 3600 * 1000)  //  both
#define PIGATO__TITANIC_RECORDS_MAX  1000000  //  stored at once, broker-wide
#define PIGATO__TITANIC_WAITERS_MAX  64       //  callers waiting on one request
#define PIGATO__TITANIC_BACKOFF_MIN  250      //  ms before the second attempt
#define PIGATO__TITANIC_BACKOFF_MAX  30000    //  ms between attempts at most
#define PIGATO__TITANIC_RETRY_WRITE  1000     //  ms after a failed write
#define PIGATO__TITANIC_TIMERS_TURN  64       //  due timers run per loop turn
//  A batch this large goes to the store at once, not at the end of the
//  turn: to an idle store, or queued behind the write under way (one at
//  most), which the store thread then starts without waiting for this
//  thread, so the disk works while the rest of the input is read. With
//  the sync threads (store.c), 64 rather than 32: fewer, larger
//  transactions cost less CPU, which is what the acks bench runs out of
//  (100 in flight, interleaved: 32 -> 64 about +10%; 8 or 16: -5 to -10%;
//  96 or only at the end of the turn: -10 to -20%)
#define PIGATO__TITANIC_EARLY_COMMIT 64
//  Batches with the store at most (being written, or synced)
#define PIGATO__TITANIC_WRITING_MAX 8

typedef struct _pigato__titanic_t pigato__titanic_t;

//  Opens the store in dir (store.h says what is refused) and recovers
//  what it holds: stored requests wait for an attempt, replies for their
//  fetch. Logs event=titanic_recovered. NULL on failure, with the reason
//  in error.
pigato__titanic_t *pigato__titanic_new (pigato_broker_t *broker,
                                        const char *dir, int64_t max_bytes,
                                        char *error, size_t error_size);

//  Stops the store thread (a write under way ends first) and frees every
//  record; answers nobody.
void pigato__titanic_destroy (pigato__titanic_t **self_p);

//  What the loop polls: readable when the store finished a write.
int pigato__titanic_fd (pigato__titanic_t *self);

//  True if a service name is one of titanic's three.
bool pigato__titanic_name (const pigato__bytes_t *service);

//  A client's request for titanic.*, its caller allowed `call` on that
//  name. body is body_count frames: an MDP client's frames as RFC 9 has
//  them, a pigato client's one data frame (then opts, or NULL).
typedef struct {
    pigato__caller_t caller;
    const char *identity;
    const pigato__bytes_t *body;
    size_t body_count;
    const pigato__bytes_t *opts;
} pigato__titanic_in_t;
void pigato__titanic_request (pigato__titanic_t *self,
                              const pigato__titanic_in_t *in);

//  What the core sends a durable request's caller (send.c, for callers
//  on PIGATO__CONN_TITANIC): a partial or final reply, or an error.
void pigato__titanic_reply (pigato__titanic_t *self, const pigato__caller_t *to,
                            int type, int status, const pigato__bytes_t *body,
                            size_t body_count);
void pigato__titanic_error (pigato__titanic_t *self, const pigato__caller_t *to,
                            const char *text);

//  Once per loop turn, after the messages: takes what the store wrote if
//  written (its fd was readable) and answers it (sent at once), hands
//  the changes made since to the store if it is idle, then runs due
//  timers (attempts, expiry), PIGATO__TITANIC_TIMERS_TURN at most (more
//  make pigato__titanic_wait 0).
void pigato__titanic_turn (pigato__titanic_t *self, bool written);

//  Milliseconds until the turn has something to do (a timer, a write
//  held back after a failure); INT64_MAX if nothing.
int64_t pigato__titanic_wait (pigato__titanic_t *self);

//  After a policy reload: stored requests whose identity left the policy
//  or lost `call` on their service end with E_ACCESS_DENIED.
void pigato__titanic_reload (pigato__titanic_t *self);

//  A counter by name without its "titanic_" prefix; -1 if unknown.
int64_t pigato__titanic_counter (pigato__titanic_t *self, const char *name);

//  --------------------------------------------------------------------------
//  Shared by titanic.c and titanic_run.c

typedef enum {
    PIGATO__TITANIC_COMMITTING = 0,
    PIGATO__TITANIC_WAITING,
    PIGATO__TITANIC_IN_FLIGHT,
    PIGATO__TITANIC_REPLYING,
    PIGATO__TITANIC_REPLIED,
    PIGATO__TITANIC_DELETING
} pigato__titanic_state_t;

//  A caller to answer once a write is on disk.
typedef struct _pigato__titanic_waiter_t {
    struct _pigato__titanic_waiter_t *next;
    bool close;  //  waits for a close, else a submission
    pigato__framing_t framing;
    pigato__conn_t conn;
    uint8_t client_size;
    byte client [255];
    uint8_t rid_size;
    byte rid [PIGATO_RID_MAX];
} pigato__titanic_waiter_t;

typedef struct _pigato__titanic_record_t {
    byte id [PIGATO__STORE_ID_SIZE];
    char hex [PIGATO__TITANIC_ID_TEXT + 1];
    int state;          //  pigato__titanic_state_t
    bool close_wanted;  //  closing: no new attempt, deleted once quiet
    bool reply_stored;  //  its final reply is on disk
    char identity [PIGATO__NAME_MAX + 1];
    pigato__tenant_t *tenant;  //  its identity's record (quotas), or NULL
    byte *key;                 //  idempotency key (malloc'd), NULL if none
    size_t key_size;
    char *service;
    int body_kind;  //  pigato__store_body_t
    byte *body;     //  freed once replied
    size_t body_size;
    byte *opts;  //  opts for the worker (JSON object), NULL if none
    size_t opts_size;
    int64_t attempt_timeout;  //  ms an attempt may last (opts timeout)
    int64_t created;          //  ms since the epoch (wall clock)
    int64_t deadline;         //  no final reply by then: E_EXPIRED
    int64_t keep;             //  ms the reply is kept
    int64_t replied_at;
    int status;  //  the final reply: 0 or -1, packed frames
    byte *reply;
    size_t reply_size;
    int attempts;           //  attempts since the broker started
    int64_t held;           //  bytes counted against its tenant
    pigato__timer_t timer;  //  wall clock ms (the next thing to do)
    pigato__titanic_waiter_t *waiters;
    size_t waiter_count;
    struct _pigato__titanic_record_t *prev, *next;  //  in flight list
    bool parked;  //  WAITING for a worker of its service (parked list)
    struct _pigato__titanic_record_t *park_prev, *park_next;
} pigato__titanic_record_t;

#define TITANIC_COUNTERS(X)                                                    \
    X (submitted)      /* requests stored (acknowledged) */                    \
    X (duplicates)     /* submissions answered with an earlier id (key) */     \
    X (refused)        /* submissions refused (400, 500) */                    \
    X (attempts)       /* handed to the core */                                \
    X (retries)        /* attempts after the first */                          \
    X (replied)        /* final replies stored */                              \
    X (expired)        /* ended by their time to live */                       \
    X (denied)         /* ended with E_ACCESS_DENIED */                        \
    X (closed)         /* closes answered */                                   \
    X (deleted)        /* records removed (closed, or kept long enough) */     \
    X (write_failures) /* batches the store could not write */

typedef struct {
#define TITANIC_COUNTER_FIELD(name) int64_t name;
    TITANIC_COUNTERS (TITANIC_COUNTER_FIELD)
#undef TITANIC_COUNTER_FIELD
} pigato__titanic_counters_t;

struct _pigato__titanic_t {
    pigato_broker_t *broker;
    pigato__core_t *core;  //  the broker's
    pigato__store_t *store;
    pigato__table_t *records;      //  id -> record
    zhashx_t *keys;                //  identity "\n" key -> record
    pigato__heap_t *timers;        //  records' next steps
    pigato__store_batch_t *batch;  //  this turn's changes, NULL: none
    int writing;          //  batches with the store (written or synced)
    int64_t write_after;  //  after a failed write: not before
    pigato__titanic_record_t *flight;  //  records with an attempt out
    zhashx_t *parked;              //  service name -> its parked records (list)
    size_t parked_count;           //  records parked
    uint64_t workers_seen;         //  the core's workers_added, last looked at
    pigato__ratelimit_t log;       //  event=titanic_write_failed lines
    pigato__ratelimit_t deny_log;  //  event=titanic_denied lines
    pigato__titanic_counters_t counters;
    uint64_t last_id;    //  the time-ordered half of the last id
    byte random [4096];  //  random bytes for ids, drawn at once
    size_t random_used;  //  (a getrandom per id was 1% of all)
};

//  titanic.c, for titanic_service.c and titanic_run.c

//  The wall clock in ms.
int64_t pigato__titanic_now (pigato__titanic_t *self);

//  Reads an id: 32 hex digits (either case), as they are or as a JSON
//  string (what Node pigato sends). False for anything else.
bool pigato__titanic_id_parse (const pigato__bytes_t *text, byte *id);

//  A new id (titanic.h, ids).
void pigato__titanic_id_make (pigato__titanic_t *self, byte *id);

//  The record of an id (16 bytes), or of one given as text; NULL if none.
pigato__titanic_record_t *pigato__titanic_find (pigato__titanic_t *self,
                                                const byte *id);
pigato__titanic_record_t *pigato__titanic_lookup (pigato__titanic_t *self,
                                                  const pigato__bytes_t *text);

//  The key index's key for an identity's idempotency key (the caller
//  frees it); NULL if out of memory.
char *pigato__titanic_key_of (const char *identity, const byte *key,
                              size_t key_size);

//  A new record in the tables (state COMMITTING, timer idle), counted
//  against its identity; everything copied. NULL if out of memory.
pigato__titanic_record_t *pigato__titanic_record_new (
    pigato__titanic_t *self, const byte *id, const char *identity,
    const byte *key, size_t key_size, const char *service, int body_kind,
    const byte *body, size_t body_size, const byte *opts, size_t opts_size);

//  Takes a record out of every table (and its attempt out of the core)
//  and frees it.
void pigato__titanic_record_free (pigato__titanic_t *self,
                                  pigato__titanic_record_t *record);

//  The batch of this turn's writes (made on first use); NULL if out of
//  memory.
pigato__store_batch_t *pigato__titanic_batch (pigato__titanic_t *self);

//  Hands the changes so far to the store (s_commit in titanic.c says
//  when): titanic_service.c does, once a batch holds
//  PIGATO__TITANIC_EARLY_COMMIT operations.
void pigato__titanic_commit (pigato__titanic_t *self);

//  Schedules a record's timer; out of memory, a second later.
void pigato__titanic_schedule (pigato__titanic_t *self,
                               pigato__titanic_record_t *record, int64_t at);

//  The record's final outcome (a reply of packed frames, status 0 or -1):
//  held and written to the store (deleted instead when a close waits).
void pigato__titanic_finish (pigato__titanic_t *self,
                             pigato__titanic_record_t *record, int status,
                             const byte *reply, size_t reply_size);

//  The same for a broker error text (E_...): a reply of one frame, the
//  text as a JSON string (what pigato peers get as an error reply).
void pigato__titanic_finish_error (pigato__titanic_t *self,
                                   pigato__titanic_record_t *record,
                                   const char *text);

//  Starts the deletion of a record (close, or kept long enough).
void pigato__titanic_delete (pigato__titanic_t *self,
                             pigato__titanic_record_t *record);

//  titanic_service.c: a submission, read from either framing
typedef struct {
    char service [PIGATO_SERVICE_MAX + 1];
    char key [PIGATO__TITANIC_KEY_MAX + 1];  //  "" if none
    int64_t ttl;
    int64_t keep;
    int64_t timeout;  //  per attempt
    char *opts;       //  for the worker (malloc'd), NULL if none
    int body_kind;
    byte *body;  //  malloc'd
    size_t body_size;
} pigato__titanic_submission_t;

//  A pigato client's submission: data is the body, opts name the service
//  (and may give key, ttl, keep; the rest goes to the worker). The
//  compact form clients send is read without a JSON parser unless parser
//  is true (tests compare the two readings). Returns NULL, or a refusal
//  text ("400 ...", in text or static); out's opts and body are the
//  caller's to free either way.
const char *pigato__titanic_read (const pigato__titanic_in_t *in, bool parser,
                                  pigato__titanic_submission_t *out, char *text,
                                  size_t text_size);

//  titanic_service.c, for titanic.c: answers every waiter of a kind
//  (closes, or else submissions) once their write came back; text NULL
//  for 200, else the refusal ("500 E_STORE ...").
void pigato__titanic_answer_waiters (pigato__titanic_t *self,
                                     pigato__titanic_record_t *record,
                                     bool close, const char *text);

//  titanic_run.c, for titanic.c and titanic_service.c

//  Hands a waiting record to the core (or ends it: denied, expired).
void pigato__titanic_attempt (pigato__titanic_t *self,
                              pigato__titanic_record_t *record);

//  A record's timer is due.
void pigato__titanic_due (pigato__titanic_t *self,
                          pigato__titanic_record_t *record);

//  Takes a record out of the flight list (no-op if not in it). With
//  drop, its core request goes too if it is still there; never from a
//  reply or an error of the core's (the core ends that request itself).
void pigato__titanic_land (pigato__titanic_t *self,
                           pigato__titanic_record_t *record, bool drop);

//  Takes a record out of the parked list (no-op if not in it).
void pigato__titanic_unpark (pigato__titanic_t *self,
                             pigato__titanic_record_t *record);

//  After a worker registered: the parked records it (or another) can
//  serve now are due.
void pigato__titanic_unpark_servable (pigato__titanic_t *self);

//  Takes back an attempt that no worker holds yet (queued in the core):
//  true if the record is no longer in flight (it was not, or it was
//  taken back), false if a worker holds it.
bool pigato__titanic_unqueue (pigato__titanic_t *self,
                              pigato__titanic_record_t *record);


#endif
