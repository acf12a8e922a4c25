/*  =========================================================================
    titanic.c - durable requests (titanic.h): the object, ids, the
    records and what they hold against their identity, their writes to
    the store and what happens once the store has written (or failed to
    write) a batch, and recovery. The services are in titanic_service.c,
    attempts, replies from the core and timers in titanic_run.c.
    =========================================================================
*/
#include <jansson.h>
#include <sodium.h>
#include <string.h>
#include "titanic.h"
#include "front.h"
#include "../wire/mdp.h"

//  --------------------------------------------------------------------------
//  Ids, time, lookups

int64_t
pigato__titanic_now (pigato__titanic_t *self)
{
    (void) self;
    return zclock_time ();
}

static void
s_hex (const byte *id, char *hex)
{
    static const char digits [] = "0123456789abcdef";
    for (size_t index = 0; index < PIGATO__STORE_ID_SIZE; index++) {
        hex [2 * index] = digits [id [index] >> 4];
        hex [2 * index + 1] = digits [id [index] & 15];
    }
    hex [PIGATO__TITANIC_ID_TEXT] = 0;
}

//  Reads an id: 32 hex digits (either case), as they are or as a JSON
//  string (what Node pigato sends). False for anything else.
bool
pigato__titanic_id_parse (const pigato__bytes_t *text, byte *id)
{
    const byte *data = text->data;
    size_t size = text->size;
    if (size == PIGATO__TITANIC_ID_TEXT + 2 && data [0] == '"'
        && data [size - 1] == '"') {
        data++;
        size -= 2;
    }
    if (size != PIGATO__TITANIC_ID_TEXT)
        return false;
    for (size_t index = 0; index < size; index++) {
        int c = data [index];
        int value = c >= '0' && c <= '9' ? c - '0'
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                         : -1;
        if (value < 0)
            return false;
        if (index % 2 == 0)
            id [index / 2] = (byte) (value << 4);
        else
            id [index / 2] |= (byte) value;
    }
    return true;
}

//  Peers choose the ids they ask about: a seeded hash.
static size_t
s_id_hash (const byte *id)
{
    return pigato__hash_bytes (id, PIGATO__STORE_ID_SIZE);
}

//  A new id: the time-ordered half (never smaller than the last one, also
//  across a restart: recovery sets last_id), then the random half.
void
pigato__titanic_id_make (pigato__titanic_t *self, byte *id)
{
    uint64_t now = (uint64_t) pigato__titanic_now (self) << 16;
    self->last_id = now > self->last_id ? now : self->last_id + 1;
    for (int index = 0; index < 8; index++)
        id [index] = (byte) (self->last_id >> (56 - 8 * index));
    if (self->random_used + 8 > sizeof self->random) {
        randombytes_buf (self->random, sizeof self->random);
        self->random_used = 0;
    }
    memcpy (id + 8, self->random + self->random_used, 8);
    self->random_used += 8;
}

static bool
s_record_match (const void *item, const void *key)
{
    return memcmp (((const pigato__titanic_record_t *) item)->id, key,
                   PIGATO__STORE_ID_SIZE)
        == 0;
}

pigato__titanic_record_t *
pigato__titanic_find (pigato__titanic_t *self, const byte *id)
{
    return (pigato__titanic_record_t *) pigato__table_lookup (
        self->records, s_id_hash (id), id);
}

pigato__titanic_record_t *
pigato__titanic_lookup (pigato__titanic_t *self, const pigato__bytes_t *text)
{
    byte id [PIGATO__STORE_ID_SIZE];
    return pigato__titanic_id_parse (text, id) ? pigato__titanic_find (self, id)
                                               : NULL;
}

//  The key index's key: identity, a newline, the idempotency key (keys
//  are printable, identities plain names: the two cannot run together).
char *
pigato__titanic_key_of (const char *identity, const byte *key, size_t key_size)
{
    return zsys_sprintf ("%s\n%.*s", identity, (int) key_size,
                         (const char *) key);
}

void
pigato__titanic_schedule (pigato__titanic_t *self,
                          pigato__titanic_record_t *record, int64_t at)
{
    if (pigato__heap_set (self->timers, &record->timer, at))
        //  Out of memory: the record is looked at again by the reload
        //  walk or never; say so rather than lose it silently
        pigato__log (PIGATO_LOG_ERROR,
                     "event=titanic_timer_lost id=%s reason=nomem",
                     record->hex);
}

//  --------------------------------------------------------------------------
//  Records

//  Counts a record's bytes against its identity (held: what it counts
//  now, changed to bytes).
static void
s_hold (pigato__titanic_record_t *record, int64_t bytes)
{
    if (record->tenant)
        record->tenant->stored_bytes += bytes - record->held;
    record->held = bytes;
}

static int64_t
s_bytes (const pigato__titanic_record_t *record)
{
    return (int64_t) (record->key_size + record->body_size + record->opts_size
                      + record->reply_size);
}

//  A new record in the tables (state COMMITTING, timer idle), counted
//  against its identity. Copies everything. NULL if out of memory or the
//  id is taken.
pigato__titanic_record_t *
pigato__titanic_record_new (pigato__titanic_t *self, const byte *id,
                            const char *identity, const byte *key,
                            size_t key_size, const char *service, int body_kind,
                            const byte *body, size_t body_size,
                            const byte *opts, size_t opts_size)
{
    pigato__titanic_record_t *record = (pigato__titanic_record_t *) calloc (
        1, sizeof *record);
    if (!record)
        return NULL;
    memcpy (record->id, id, PIGATO__STORE_ID_SIZE);
    s_hex (id, record->hex);
    pigato__timer_init (&record->timer);
    size_t identity_size = strlen (identity);
    if (identity_size >= sizeof record->identity)
        identity_size = sizeof record->identity - 1;
    memcpy (record->identity, identity, identity_size);  //  calloc'd: ends
    record->service = strdup (service);
    record->body_kind = body_kind;
    record->body = (byte *) malloc (body_size ? body_size : 1);
    if (body_size && record->body)
        memcpy (record->body, body, body_size);
    record->body_size = body_size;
    if (opts && opts_size) {
        record->opts = (byte *) malloc (opts_size);
        if (record->opts)
            memcpy (record->opts, opts, opts_size);
        record->opts_size = opts_size;
    }
    if (key && key_size) {
        record->key = (byte *) malloc (key_size);
        if (record->key)
            memcpy (record->key, key, key_size);
        record->key_size = key_size;
    }
    bool ok = record->service && record->body && (!opts_size || record->opts)
           && (!key_size || record->key);
    char *index_key = ok && record->key
                        ? pigato__titanic_key_of (identity, key, key_size)
                        : NULL;
    if (!ok || (record->key && !index_key)
        || pigato__table_insert (self->records, s_id_hash (id), record->id,
                                 record)) {
        free (index_key);
        free (record->service);
        free (record->body);
        free (record->opts);
        free (record->key);
        free (record);
        return NULL;
    }
    if (index_key) {
        zhashx_update (self->keys, index_key, record);
        free (index_key);
    }
    record->tenant = pigato__core_tenant (self->core, identity);
    if (record->tenant)
        record->tenant->stored++;
    s_hold (record, s_bytes (record));
    return record;
}

static void
s_waiters_free (pigato__titanic_record_t *record)
{
    while (record->waiters) {
        pigato__titanic_waiter_t *next = record->waiters->next;
        free (record->waiters);
        record->waiters = next;
    }
    record->waiter_count = 0;
}

//  Takes a record out of every table and frees it.
void
pigato__titanic_record_free (pigato__titanic_t *self,
                             pigato__titanic_record_t *record)
{
    pigato__titanic_land (self, record, true);
    pigato__titanic_unpark (self, record);
    pigato__heap_remove (self->timers, &record->timer);
    pigato__table_delete (self->records, s_id_hash (record->id), record->id);
    if (record->key) {
        char *index_key = pigato__titanic_key_of (record->identity, record->key,
                                                  record->key_size);
        if (index_key && zhashx_lookup (self->keys, index_key) == record)
            zhashx_delete (self->keys, index_key);
        free (index_key);
    }
    s_hold (record, 0);
    if (record->tenant)
        record->tenant->stored--;
    s_waiters_free (record);
    free (record->service);
    free (record->body);
    free (record->opts);
    free (record->reply);
    free (record->key);
    free (record);
}

//  --------------------------------------------------------------------------
//  Writes

//  The batch of this turn (made on first use); NULL if out of memory.
pigato__store_batch_t *
pigato__titanic_batch (pigato__titanic_t *self)
{
    if (!self->batch)
        self->batch = pigato__store_batch_new ();
    return self->batch;
}

//  Queues the write a record's state calls for (REPLYING: its reply;
//  DELETING: its deletion). Out of memory: tried again a second later.
static void
s_queue_write (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    pigato__store_batch_t *batch = pigato__titanic_batch (self);
    int rc = PIGATO_E_NOMEM;
    if (batch && record->state == PIGATO__TITANIC_REPLYING)
        rc = pigato__store_batch_reply (batch, record->id, record->replied_at,
                                        record->status, record->reply,
                                        record->reply_size);
    else if (batch && record->state == PIGATO__TITANIC_DELETING)
        rc = pigato__store_batch_delete (batch, record->id);
    if (rc)
        pigato__titanic_schedule (self, record,
                                  pigato__titanic_now (self) + 1000);
}

//  pigato__titanic_finish; quota: the reply is checked against the
//  submitter's stored-bytes (not the broker's own short error texts)
static void
s_finish (pigato__titanic_t *self, pigato__titanic_record_t *record, int status,
          const byte *reply, size_t reply_size, bool quota)
{
    pigato__titanic_unpark (self, record);
    pigato__heap_remove (self->timers, &record->timer);
    if (record->close_wanted) {
        //  Nobody will fetch it: nothing to store
        pigato__titanic_delete (self, record);
        return;
    }
    //  The reply (or a worker's error) is kept for the submitter and
    //  counts against its stored-bytes (the body it replaces no longer
    //  does): a worker's large replies must not take more of the disk
    //  than the submitter may hold. The broker's error text that replaces
    //  it is short and always stored.
    pigato__tenant_t *tenant = record->tenant;
    if (quota && reply != record->reply  //  not a write again of what is held
        && tenant && tenant->limits.stored_bytes >= 0
        && tenant->stored_bytes - record->held
                   + (int64_t) (record->key_size + record->opts_size
                                + reply_size)
               > tenant->limits.stored_bytes) {
        char text [PIGATO__NAME_MAX + 256];
        snprintf (text, sizeof text,
                  "E_QUOTA the reply (%zu bytes) would pass identity %s's "
                  "stored-bytes limit (%" PRId64 "); it was not stored",
                  reply_size, tenant->identity, tenant->limits.stored_bytes);
        pigato__bytes_t service = { (const byte *) record->service,
                                    strlen (record->service) };
        pigato__core_quota_log (self->core, tenant->identity, &service,
                                "stored-bytes");
        pigato__titanic_finish_error (self, record, text);
        return;
    }
    byte *copy = (byte *) malloc (reply_size ? reply_size : 1);
    if (!copy) {
        //  Out of memory: it is attempted again later
        record->state = PIGATO__TITANIC_WAITING;
        pigato__titanic_schedule (self, record,
                                  pigato__titanic_now (self) + 1000);
        return;
    }
    if (reply_size)
        memcpy (copy, reply, reply_size);
    free (record->reply);
    record->reply = copy;
    record->reply_size = reply_size;
    record->status = status;
    record->replied_at = pigato__titanic_now (self);
    //  The body is done with (and dropped from the store too)
    free (record->body);
    record->body = NULL;
    record->body_size = 0;
    s_hold (record, s_bytes (record));
    record->state = PIGATO__TITANIC_REPLYING;
    s_queue_write (self, record);
}

void
pigato__titanic_finish (pigato__titanic_t *self,
                        pigato__titanic_record_t *record, int status,
                        const byte *reply, size_t reply_size)
{
    s_finish (self, record, status, reply, reply_size, true);
}

void
pigato__titanic_finish_error (pigato__titanic_t *self,
                              pigato__titanic_record_t *record,
                              const char *text)
{
    char *json = pigato__json_string (text);
    pigato__bytes_t frame = { (const byte *) json, json ? strlen (json) : 0 };
    byte packed [PIGATO__MDP_PACKED_HEAD + 512];
    size_t size = frame.size + PIGATO__MDP_PACKED_HEAD <= sizeof packed
                    ? pigato__mdp_pack (packed, sizeof packed, &frame, 1)
                    : PIGATO__MDP_PACK_INVALID;
    free (json);
    if (size == PIGATO__MDP_PACK_INVALID)
        size = 0;
    s_finish (self, record, -1, packed, size, false);
}

void
pigato__titanic_delete (pigato__titanic_t *self,
                        pigato__titanic_record_t *record)
{
    pigato__titanic_land (self, record, true);
    pigato__titanic_unpark (self, record);
    pigato__heap_remove (self->timers, &record->timer);
    record->state = PIGATO__TITANIC_DELETING;
    s_queue_write (self, record);
}

//  Logs a failed write, rate-limited (SQLite's reason, never data).
static void
s_write_failed (pigato__titanic_t *self, const char *error, size_t ops)
{
    self->counters.write_failures++;
    if (pigato__ratelimit_allow_at (&self->log, "titanic_write_failed",
                                    PIGATO_LOG_ERROR)) {
        char reason [512];
        pigato__log (PIGATO_LOG_ERROR,
                     "event=titanic_write_failed operations=%zu error=\"%s\"",
                     ops,
                     pigato__printable_quoted (error, reason, sizeof reason));
    }
}

//  A batch came back from the store: what is on disk is answered and
//  moves on; what failed is refused (submissions, closes) or written
//  again later (replies, deletions nobody waits for).
static void
s_written (pigato__titanic_t *self, pigato__store_batch_t *batch)
{
    const char *error;
    int status = pigato__store_batch_status (batch, &error);
    size_t count = pigato__store_batch_size (batch);
    int64_t now = pigato__titanic_now (self);
    char text [400];
    if (status) {
        s_write_failed (self, error, count);
        self->write_after = now + PIGATO__TITANIC_RETRY_WRITE;
        snprintf (text, sizeof text,
                  "500 E_STORE the broker could not store it: %s", error);
    }
    for (size_t index = 0; index < count; index++) {
        const byte *id;
        int op = pigato__store_batch_op (batch, index, &id);
        pigato__titanic_record_t *record = pigato__titanic_find (self, id);
        if (!record)
            continue;
        if (op == PIGATO__STORE_INSERT
            && record->state == PIGATO__TITANIC_COMMITTING) {
            if (status) {
                pigato__titanic_answer_waiters (self, record, false, text);
                pigato__titanic_record_free (self, record);
                continue;
            }
            self->counters.submitted++;
            record->state = PIGATO__TITANIC_WAITING;
            pigato__titanic_answer_waiters (self, record, false, NULL);
            pigato__titanic_schedule (self, record, now);
        }
        else if (op == PIGATO__STORE_REPLY
                 && record->state == PIGATO__TITANIC_REPLYING) {
            if (status) {
                pigato__titanic_schedule (self, record, self->write_after);
                continue;
            }
            self->counters.replied++;
            record->reply_stored = true;
            record->state = PIGATO__TITANIC_REPLIED;
            if (record->close_wanted)
                pigato__titanic_delete (self, record);
            else
                pigato__titanic_schedule (self, record,
                                          record->replied_at + record->keep);
        }
        else if (op == PIGATO__STORE_DELETE
                 && record->state == PIGATO__TITANIC_DELETING) {
            if (status == 0) {
                self->counters.deleted++;
                pigato__titanic_answer_waiters (self, record, true, NULL);
                pigato__titanic_record_free (self, record);
                continue;
            }
            //  The close is refused; the record goes on as it was
            pigato__titanic_answer_waiters (self, record, true, text);
            record->close_wanted = false;
            record->state = record->reply_stored ? PIGATO__TITANIC_REPLIED
                                                 : PIGATO__TITANIC_WAITING;
            pigato__titanic_schedule (self, record, self->write_after);
        }
    }
}

//  --------------------------------------------------------------------------
//  The object

//  One row of the store at recovery: a record waiting for an attempt, or
//  holding its reply. Rows we cannot use are skipped (counted).
typedef struct {
    pigato__titanic_t *self;
    int64_t pending;
    int64_t replied;
    int64_t bytes;
    int64_t skipped;
    int64_t now;
} s_recovery_t;

static int
s_recover (void *arg, const pigato__store_row_t *row)
{
    s_recovery_t *recovery = (s_recovery_t *) arg;
    pigato__titanic_t *self = recovery->self;
    //  New ids come after every stored one, skipped or not: the store
    //  keys its rows by this half (store_format.h)
    uint64_t time_half = 0;
    for (int index = 0; index < 8; index++)
        time_half = time_half << 8 | row->id [index];
    if (time_half > self->last_id)
        self->last_id = time_half;
    if (strlen (row->identity) > PIGATO__NAME_MAX
        || row->key_size > PIGATO__TITANIC_KEY_MAX || strlen (row->service) < 1
        || strlen (row->service) > PIGATO_SERVICE_MAX
        || (row->body_kind != PIGATO__STORE_BODY_ONE
            && row->body_kind != PIGATO__STORE_BODY_FRAMES)
        || row->opts_size > PIGATO__OPTS_MAX
        || pigato__titanic_find (self, row->id)) {
        recovery->skipped++;
        return 0;
    }
    pigato__titanic_record_t *record = pigato__titanic_record_new (
        self, row->id, row->identity, row->key, row->key_size, row->service,
        row->body_kind, row->body, row->body_size, row->opts, row->opts_size);
    if (!record)
        return PIGATO_E_NOMEM;
    record->created = row->created;
    record->deadline = row->deadline;
    record->keep = row->keep;
    record->attempt_timeout = PIGATO_TIMEOUT_MS;
    if (row->opts_size) {
        json_t *opts = json_loadb ((const char *) row->opts, row->opts_size, 0,
                                   NULL);
        record->attempt_timeout = pigato__opts_timeout (opts,
                                                        PIGATO_TIMEOUT_MS);
        json_decref (opts);
    }
    if (row->replied) {
        record->reply = (byte *) malloc (row->reply_size ? row->reply_size : 1);
        if (!record->reply) {
            pigato__titanic_record_free (self, record);
            return PIGATO_E_NOMEM;
        }
        if (row->reply_size)
            memcpy (record->reply, row->reply, row->reply_size);
        record->reply_size = row->reply_size;
        record->status = row->status;
        record->replied_at = row->replied_at;
        record->reply_stored = true;
        record->state = PIGATO__TITANIC_REPLIED;
        s_hold (record, s_bytes (record));
        pigato__titanic_schedule (self, record,
                                  record->replied_at + record->keep);
        recovery->replied++;
    }
    else {
        record->state = PIGATO__TITANIC_WAITING;
        pigato__titanic_schedule (self, record, recovery->now);
        recovery->pending++;
    }
    recovery->bytes += record->held;
    return 0;
}

pigato__titanic_t *
pigato__titanic_new (pigato_broker_t *broker, const char *dir,
                     int64_t max_bytes, char *error, size_t error_size)
{
    int64_t started = pigato__now_ms ();
    if (sodium_init () < 0) {
        pigato__errorf (error, error_size, "libsodium cannot start");
        return NULL;
    }
    pigato__titanic_t *self = (pigato__titanic_t *) calloc (1, sizeof *self);
    if (!self) {
        pigato__errorf (error, error_size, "out of memory");
        return NULL;
    }
    self->broker = broker;
    self->core = broker->core;
    //  Nobody heartbeats durable requests for their client: the core does,
    //  while a worker holds them
    self->core->heartbeat_conn = PIGATO__CONN_TITANIC;
    self->deny_log.limit = 200;
    self->random_used = sizeof self->random;  //  drawn at the first id
    self->records = pigato__table_new (s_record_match);
    self->keys = zhashx_new ();
    self->timers = pigato__heap_new ();
    self->parked = zhashx_new ();
    if (!self->records || !self->keys || !self->timers || !self->parked) {
        pigato__errorf (error, error_size, "out of memory");
        pigato__titanic_destroy (&self);
        return NULL;
    }
    zhashx_set_key_hasher (self->keys, pigato__hash_keyed_text);
    self->store = pigato__store_open (dir, max_bytes, error, error_size);
    s_recovery_t recovery = { .self = self, .now = pigato__titanic_now (self) };
    int rc = self->store ? pigato__store_load (self->store, s_recover,
                                               &recovery, error, error_size)
                         : PIGATO_E_STORE;
    if (rc == PIGATO_E_NOMEM)
        pigato__errorf (error, error_size,
                        "out of memory while reading the store");
    if (rc == 0)
        rc = pigato__store_start (self->store, broker->store_sync, error,
                                  error_size);
    if (rc) {
        pigato__titanic_destroy (&self);
        return NULL;
    }
    char folder [1024];
    char sync [32] = "commit";
    int64_t interval = pigato__store_interval (self->store);
    if (interval)
        snprintf (sync, sizeof sync, "%" PRId64 "ms", interval);
    pigato__log (PIGATO_LOG_INFO,
                 "event=titanic_recovered store=%s pending=%" PRId64
                 " replied=%" PRId64 " bytes=%" PRId64 " skipped=%" PRId64
                 " ms=%" PRId64 " sync=%s",
                 pigato__printable (dir, strlen (dir), folder, sizeof folder),
                 recovery.pending, recovery.replied, recovery.bytes,
                 recovery.skipped, pigato__now_ms () - started, sync);
    return self;
}

void
pigato__titanic_destroy (pigato__titanic_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pigato__titanic_t *self = *self_p;
    pigato__store_destroy (&self->store);
    pigato__store_batch_destroy (&self->batch);
    pigato__heap_destroy (&self->timers);
    if (self->records) {
        size_t cursor = 0;
        pigato__titanic_record_t *record;
        while ((record = (pigato__titanic_record_t *) pigato__table_next (
                    self->records, &cursor))) {
            //  Tenants and core requests go with the core: not touched
            s_waiters_free (record);
            free (record->service);
            free (record->body);
            free (record->opts);
            free (record->reply);
            free (record->key);
            free (record);
        }
        pigato__table_destroy (&self->records);
    }
    zhashx_destroy (&self->keys);
    zhashx_destroy (&self->parked);
    free (self);
    *self_p = NULL;
}

int
pigato__titanic_fd (pigato__titanic_t *self)
{
    return pigato__store_fd (self->store);
}

//  Hands the changes so far to the store (unless a failed write holds
//  them back, or PIGATO__TITANIC_WRITING_MAX batches are with it): any
//  when the store thread has nothing to write (it may still be syncing:
//  the sync threads group what it wrote meanwhile),
//  PIGATO__TITANIC_EARLY_COMMIT or more to queue behind the one write
//  under way, so that the store starts them as it ends it. What waits
//  goes at a later turn (the next input, or the next batch back).
static void
s_commit (pigato__titanic_t *self, int64_t now)
{
    size_t size = self->batch ? pigato__store_batch_size (self->batch) : 0;
    if (size > 0 && now >= self->write_after
        && self->writing < PIGATO__TITANIC_WRITING_MAX) {
        int unwritten = pigato__store_unwritten (self->store);
        if (unwritten > 1
            || (unwritten == 1 && size < PIGATO__TITANIC_EARLY_COMMIT))
            return;
        pigato__store_commit (self->store, &self->batch);
        self->writing++;
    }
}

void
pigato__titanic_commit (pigato__titanic_t *self)
{
    s_commit (self, pigato__titanic_now (self));
}

void
pigato__titanic_turn (pigato__titanic_t *self, bool written)
{
    //  Nothing durable going on (a broker with a store that serves other
    //  traffic): not even the clock is read
    if (!written && !self->batch && !pigato__heap_peek (self->timers)
        && self->core->workers_added == self->workers_seen)
        return;
    int64_t now = pigato__titanic_now (self);
    //  Only when the fd said so: a system call a turn is not for free
    pigato__store_batch_t *done;
    bool answered = false;
    while (written && (done = pigato__store_done (self->store))) {
        self->writing--;
        s_written (self, done);
        pigato__store_batch_destroy (&done);
        answered = true;
    }
    //  The answers leave at once, not after the attempts below
    if (answered)
        pigato__outbox_flush (self->broker->outbox);
    //  The disk is the slowest stage: what came while it wrote (and in
    //  this turn's messages) goes to it before anything else (group
    //  commit)
    s_commit (self, now);
    //  A worker registered: what was parked for it is due
    if (self->core->workers_added != self->workers_seen) {
        self->workers_seen = self->core->workers_added;
        if (self->parked_count)
            pigato__titanic_unpark_servable (self);
    }
    //  Due timers (the first attempts of what was just stored, among
    //  them), a bounded number a turn: a burst (a write of thousands, a
    //  recovery) must not keep the loop from its sockets, whose input
    //  comes first; the rest are due again next turn, which does not wait
    pigato__timer_t *timer;
    for (int count = 0; count < PIGATO__TITANIC_TIMERS_TURN
                        && (timer = pigato__heap_pop_due (self->timers, now));
         count++)
        pigato__titanic_due (self, pigato__container_of (
                                       timer, pigato__titanic_record_t, timer));
    s_commit (self, now);
}

int64_t
pigato__titanic_wait (pigato__titanic_t *self)
{
    int64_t now = pigato__titanic_now (self);
    int64_t wait = INT64_MAX;
    pigato__timer_t *next = pigato__heap_peek (self->timers);
    if (next)
        wait = next->when - now;
    if (self->writing == 0 && self->batch
        && pigato__store_batch_size (self->batch) > 0
        && self->write_after - now < wait)
        wait = self->write_after - now;
    return wait < 0 ? 0 : wait;
}

int64_t
pigato__titanic_counter (pigato__titanic_t *self, const char *name)
{
#define TITANIC_COUNTER_LOOKUP(field)                                          \
    if (streq (name, #field))                                                  \
        return self->counters.field;
    TITANIC_COUNTERS (TITANIC_COUNTER_LOOKUP)
#undef TITANIC_COUNTER_LOOKUP
    if (streq (name, "stored"))
        return (int64_t) pigato__table_size (self->records);
    if (streq (name, "in_flight")) {
        int64_t count = 0;
        for (pigato__titanic_record_t *record = self->flight; record;
             record = record->next)
            count++;
        return count;
    }
    if (streq (name, "parked"))
        return (int64_t) self->parked_count;
    if (streq (name, "commits"))
        return pigato__store_commits (self->store);
    if (streq (name, "operations"))
        return pigato__store_operations (self->store);
    if (streq (name, "syncs"))
        return pigato__store_syncs (self->store);
    if (streq (name, "broken"))
        return pigato__store_broken (self->store) ? 1 : 0;
    if (streq (name, "sync_interval_ms"))
        return pigato__store_interval (self->store);
    return -1;
}
