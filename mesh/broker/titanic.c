/*  =========================================================================
    titanic.c - durable requests (titanic.h): the records, recovery from
    the store, the three RFC 9 services in every framing, and what
    happens once the store has written (or failed to write) a batch.
    Attempts, replies from the core and timers are in titanic_run.c.

    Answers (docs/protocol.md, "Durable requests"): an MDP client gets RFC
    9's frames (a status frame, then the content); a pigato client gets
    one data frame: the content with status 0 for 200, else status -1
    and the status text as a JSON string ("300 E_PENDING ..."), and the
    status code in the reply opts ({"titanic":300}).

    Bodies, opts and replies are tenants' data: they are never logged.
    =========================================================================
*/
#include <jansson.h>
#include <sodium.h>
#include <string.h>
#include "titanic.h"
#include "front.h"
#include "../wire/mdp.h"

#define TITANIC_CLIENT "$titanic"  //  the routing id the core gets

static const char *s_pending_text = "300 E_PENDING no reply yet; ask again "
                                    "later";
static const char *s_unknown_text = "400 E_UNKNOWN no such request";

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
static bool
s_id_parse (const pigato__bytes_t *text, byte *id)
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
static void
s_id_make (pigato__titanic_t *self, byte *id)
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

static pigato__titanic_record_t *
s_lookup (pigato__titanic_t *self, const byte *id)
{
    return (pigato__titanic_record_t *) pigato__table_lookup (
        self->records, s_id_hash (id), id);
}

pigato__titanic_record_t *
pigato__titanic_lookup (pigato__titanic_t *self, const pigato__bytes_t *text)
{
    byte id [PIGATO__STORE_ID_SIZE];
    return s_id_parse (text, id) ? s_lookup (self, id) : NULL;
}

//  The key index's key: identity, a newline, the idempotency key (keys
//  are printable, identities plain names: the two cannot run together).
static char *
s_key_of (const char *identity, const byte *key, size_t key_size)
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
static pigato__titanic_record_t *
s_record_new (pigato__titanic_t *self, const byte *id, const char *identity,
              const byte *key, size_t key_size, const char *service,
              int body_kind, const byte *body, size_t body_size,
              const byte *opts, size_t opts_size)
{
    pigato__titanic_record_t *record = (pigato__titanic_record_t *) calloc (
        1, sizeof *record);
    if (!record)
        return NULL;
    memcpy (record->id, id, PIGATO__STORE_ID_SIZE);
    s_hex (id, record->hex);
    pigato__timer_init (&record->timer);
    snprintf (record->identity, sizeof record->identity, "%s", identity);
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
    char *index_key = ok && record->key ? s_key_of (identity, key, key_size)
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
static void
s_record_free (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    pigato__titanic_land (self, record, true);
    pigato__heap_remove (self->timers, &record->timer);
    pigato__table_delete (self->records, s_id_hash (record->id), record->id);
    if (record->key) {
        char *index_key = s_key_of (record->identity, record->key,
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
//  Answers

//  Sends an answer: code 200 with content (count frames; status is the
//  pigato status of a stored reply), or a status text ("300 E_..."), in
//  the caller's framing.
static void
s_answer (pigato__titanic_t *self, const pigato__caller_t *to, int code,
          const char *text, const pigato__bytes_t *content, size_t count,
          int status)
{
    pigato_broker_t *broker = self->broker;
    if (to->framing == PIGATO__FRAMING_MDP) {
        //  RFC 9: the status frame, then the content
        pigato__bytes_t frames [PIGATO__MDP_BODY_MAX];
        size_t used = 0;
        frames [used++] = code == 200 ? BYTES ("200") : BYTES (text);
        for (size_t index = 0;
             code == 200 && index < count && used < PIGATO__MDP_BODY_MAX;
             index++)
            frames [used++] = content [index];
        pigato__broker_send_reply (broker, to, PIGATO__REPLY, 0, frames, used,
                                   NULL, NULL);
        return;
    }
    char opts_text [32];
    snprintf (opts_text, sizeof opts_text, "{\"titanic\":%d}", code);
    pigato__bytes_t opts = BYTES (opts_text);
    if (code != 200) {
        char *json = pigato__json_string (text);
        pigato__bytes_t data = { (const byte *) json,
                                 json ? strlen (json) : 0 };
        pigato__broker_send_reply (broker, to, PIGATO__REPLY, -1, &data, 1,
                                   &opts, NULL);
        free (json);
        return;
    }
    pigato__bytes_t none = { NULL, 0 };
    pigato__broker_send_reply (broker, to, PIGATO__REPLY, status,
                               count ? content : &none, 1, &opts, NULL);
}

//  A refusal of a submission (400 or 500 and a sentence), counted.
static void
s_refuse (pigato__titanic_t *self, const pigato__caller_t *to, const char *text)
{
    self->counters.refused++;
    s_answer (self, to, atoi (text), text, NULL, 0, 0);
}

//  A submission's answer: the id (a JSON string for pigato peers, whose
//  data Node pigato parses as JSON; the bare id as RFC 9's second frame).
static void
s_answer_id (pigato__titanic_t *self, const pigato__caller_t *to,
             const pigato__titanic_record_t *record)
{
    char quoted [PIGATO__TITANIC_ID_TEXT + 3];
    snprintf (quoted, sizeof quoted, "\"%s\"", record->hex);
    pigato__bytes_t id = to->framing == PIGATO__FRAMING_MDP
                           ? BYTES (record->hex)
                           : BYTES (quoted);
    s_answer (self, to, 200, NULL, &id, 1, 0);
}

//  A close's answer: 200 (RFC 9 has no content; pigato peers get the
//  digits, valid JSON).
static void
s_answer_closed (pigato__titanic_t *self, const pigato__caller_t *to)
{
    pigato__bytes_t digits = BYTES ("200");
    s_answer (self, to, 200, NULL, &digits,
              to->framing == PIGATO__FRAMING_MDP ? 0 : 1, 0);
}

static pigato__caller_t
s_waiter_caller (const pigato__titanic_waiter_t *waiter)
{
    pigato__caller_t caller = {
        .framing = waiter->framing,
        .client = { waiter->client, waiter->client_size },
        .conn = waiter->conn,
        .rid = { waiter->rid, waiter->rid_size },
        .service = waiter->close ? BYTES ("titanic.close")
                                 : BYTES ("titanic.request")
    };
    return caller;
}

//  Remembers a caller to answer once the record's write is on disk.
//  False (the caller is answered 500 here) if too many wait already or
//  out of memory.
static bool
s_wait (pigato__titanic_t *self, pigato__titanic_record_t *record,
        const pigato__caller_t *caller, bool close)
{
    pigato__titanic_waiter_t *waiter = NULL;
    if (record->waiter_count < PIGATO__TITANIC_WAITERS_MAX
        && caller->client.size <= sizeof waiter->client
        && caller->rid.size <= sizeof waiter->rid)
        waiter = (pigato__titanic_waiter_t *) calloc (1, sizeof *waiter);
    if (!waiter) {
        s_refuse (self, caller,
                  "500 E_OVERLOADED too many callers wait on this request; "
                  "try again later");
        return false;
    }
    waiter->close = close;
    waiter->framing = caller->framing;
    waiter->conn = caller->conn;
    waiter->client_size = (uint8_t) caller->client.size;
    memcpy (waiter->client, caller->client.data, caller->client.size);
    waiter->rid_size = (uint8_t) caller->rid.size;
    if (caller->rid.size)
        memcpy (waiter->rid, caller->rid.data, caller->rid.size);
    waiter->next = record->waiters;
    record->waiters = waiter;
    record->waiter_count++;
    return true;
}

//  Answers every waiter of a kind (close or not): text NULL for 200.
static void
s_answer_waiters (pigato__titanic_t *self, pigato__titanic_record_t *record,
                  bool close, const char *text)
{
    pigato__titanic_waiter_t **link = &record->waiters;
    while (*link) {
        pigato__titanic_waiter_t *waiter = *link;
        if (waiter->close != close) {
            link = &waiter->next;
            continue;
        }
        pigato__caller_t caller = s_waiter_caller (waiter);
        if (text)
            s_refuse (self, &caller, text);
        else if (close) {
            self->counters.closed++;
            s_answer_closed (self, &caller);
        }
        else
            s_answer_id (self, &caller, record);
        *link = waiter->next;
        free (waiter);
        record->waiter_count--;
    }
}

//  --------------------------------------------------------------------------
//  Writes

//  The batch of this turn (made on first use); NULL if out of memory.
static pigato__store_batch_t *
s_batch (pigato__titanic_t *self)
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
    pigato__store_batch_t *batch = s_batch (self);
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

void
pigato__titanic_finish (pigato__titanic_t *self,
                        pigato__titanic_record_t *record, int status,
                        const byte *reply, size_t reply_size)
{
    pigato__heap_remove (self->timers, &record->timer);
    if (record->close_wanted) {
        //  Nobody will fetch it: nothing to store
        pigato__titanic_delete (self, record);
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
    pigato__titanic_finish (self, record, -1, packed, size);
}

void
pigato__titanic_delete (pigato__titanic_t *self,
                        pigato__titanic_record_t *record)
{
    pigato__titanic_land (self, record, true);
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
        pigato__titanic_record_t *record = s_lookup (self, id);
        if (!record)
            continue;
        if (op == PIGATO__STORE_INSERT
            && record->state == PIGATO__TITANIC_COMMITTING) {
            if (status) {
                s_answer_waiters (self, record, false, text);
                s_record_free (self, record);
                continue;
            }
            self->counters.submitted++;
            record->state = PIGATO__TITANIC_WAITING;
            s_answer_waiters (self, record, false, NULL);
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
                s_answer_waiters (self, record, true, NULL);
                s_record_free (self, record);
                continue;
            }
            //  The close is refused; the record goes on as it was
            s_answer_waiters (self, record, true, text);
            record->close_wanted = false;
            record->state = record->reply_stored ? PIGATO__TITANIC_REPLIED
                                                 : PIGATO__TITANIC_WAITING;
            pigato__titanic_schedule (self, record, self->write_after);
        }
    }
}

//  --------------------------------------------------------------------------
//  titanic.request

//  A submission, read from either framing.
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
} s_submission_t;

//  A duration in ms from opts: absent (the default), or 1 to
//  PIGATO__TITANIC_TIME_MAX. False if present and not that.
static bool
s_duration (json_t *opts, const char *name, int64_t fallback, int64_t *value)
{
    json_t *field = json_object_get (opts, name);
    *value = fallback;
    if (!field)
        return true;
    if (!json_is_integer (field) || json_integer_value (field) < 1
        || json_integer_value (field) > PIGATO__TITANIC_TIME_MAX)
        return false;
    *value = json_integer_value (field);
    return true;
}

//  A pigato client's submission: data is the body, opts name the service
//  (and may give key, ttl, keep; the rest goes to the worker). Returns
//  NULL, or a refusal text.
static const char *
s_read_pigato (const pigato__titanic_in_t *in, s_submission_t *out, char *text,
               size_t text_size)
{
    json_error_t error;
    json_t *opts = in->opts && in->opts->size
                     ? json_loadb ((const char *) in->opts->data,
                                   in->opts->size, JSON_REJECT_DUPLICATES,
                                   &error)
                     : NULL;
    const char *refusal = NULL;
    json_t *service = json_object_get (opts, "service");
    json_t *key = json_object_get (opts, "key");
    if (!json_is_object (opts) || !json_is_string (service))
        refusal = "400 E_INVALID_OPTS titanic.request needs opts naming the "
                  "service: {\"service\":\"NAME\"}";
    else if (json_string_length (service) < 1
             || json_string_length (service) > PIGATO_SERVICE_MAX
             || strlen (json_string_value (service))
                    != json_string_length (service))
        refusal = "400 E_INVALID_OPTS service must be 1 to 255 bytes";
    else if (key
             && (!json_is_string (key) || json_string_length (key) < 1
                 || json_string_length (key) > PIGATO__TITANIC_KEY_MAX))
        refusal = "400 E_INVALID_OPTS key must be a string of 1 to 64 "
                  "printable characters";
    else if (json_object_get (opts, "workerId"))
        refusal = "400 E_INVALID_OPTS workerId cannot name the worker of a "
                  "durable request";
    else if (!s_duration (opts, "ttl", PIGATO__TITANIC_TTL_DEFAULT, &out->ttl)
             || !s_duration (opts, "keep", PIGATO__TITANIC_KEEP_DEFAULT,
                             &out->keep))
        refusal = "400 E_INVALID_OPTS ttl and keep are ms from 1 to "
                  "2592000000 (30 days)";
    if (!refusal && key) {
        const char *value = json_string_value (key);
        for (size_t index = 0; value [index] && !refusal; index++)
            if ((byte) value [index] < 0x20 || (byte) value [index] == 0x7f)
                refusal = "400 E_INVALID_OPTS key must be a string of 1 to "
                          "64 printable characters";
        snprintf (out->key, sizeof out->key, "%s", value);
    }
    if (!refusal) {
        snprintf (out->service, sizeof out->service, "%s",
                  json_string_value (service));
        out->timeout = pigato__opts_timeout (opts, PIGATO_TIMEOUT_MS);
        //  What is titanic's is not the worker's
        const char *ours [] = { "service", "key",     "ttl",    "keep",
                                "retry",   "attempt", "titanic" };
        for (size_t index = 0; index < sizeof ours / sizeof ours [0]; index++)
            json_object_del (opts, ours [index]);
        if (json_object_size (opts)) {
            out->opts = json_dumps (opts, JSON_COMPACT);
            //  Room for "titanic" and "attempt" in front at each attempt
            if (!out->opts || strlen (out->opts) > PIGATO__OPTS_MAX - 80) {
                snprintf (text, text_size,
                          "400 E_INVALID_OPTS opts over %d bytes",
                          PIGATO__OPTS_MAX - 80);
                refusal = text;
            }
        }
        out->body_kind = PIGATO__STORE_BODY_ONE;
        out->body_size = in->body_count ? in->body [0].size : 0;
        out->body = (byte *) malloc (out->body_size ? out->body_size : 1);
        if (out->body && out->body_size)
            memcpy (out->body, in->body [0].data, out->body_size);
    }
    json_decref (opts);
    return refusal;
}

//  An MDP client's submission, as RFC 9 has it: the service, then the
//  body frames (kept packed, and delivered as frames).
static const char *
s_read_mdp (const pigato__titanic_in_t *in, s_submission_t *out)
{
    if (in->body_count < 1 || in->body [0].size < 1
        || in->body [0].size > PIGATO_SERVICE_MAX
        || memchr (in->body [0].data, 0, in->body [0].size))
        return "400 E_INVALID titanic.request takes the service name (1 to "
               "255 bytes), then the body frames";
    memcpy (out->service, in->body [0].data, in->body [0].size);
    out->service [in->body [0].size] = 0;
    out->ttl = PIGATO__TITANIC_TTL_DEFAULT;
    out->keep = PIGATO__TITANIC_KEEP_DEFAULT;
    out->timeout = PIGATO_TIMEOUT_MS;
    out->body_kind = PIGATO__STORE_BODY_FRAMES;
    size_t size = pigato__mdp_packed_size (in->body + 1, in->body_count - 1);
    if (size == PIGATO__MDP_PACK_INVALID)
        return "400 E_INVALID the body cannot be stored";
    out->body = (byte *) malloc (size ? size : 1);
    if (out->body)
        pigato__mdp_pack (out->body, size, in->body + 1, in->body_count - 1);
    out->body_size = size;
    return NULL;
}

static void
s_submit (pigato__titanic_t *self, const pigato__titanic_in_t *in)
{
    const pigato__caller_t *caller = &in->caller;
    s_submission_t sub = { .opts = NULL };
    char text [PIGATO_SERVICE_MAX + 600];
    const char *refusal = caller->framing == PIGATO__FRAMING_MDP
                            ? s_read_mdp (in, &sub)
                            : s_read_pigato (in, &sub, text, sizeof text);
    pigato__bytes_t service = BYTES (sub.service);
    if (!refusal && !sub.body)
        refusal = "500 E_OVERLOADED the broker ran out of memory; try again "
                  "later";
    if (!refusal
        && (pigato__core_reserved (&service)
            || pigato__titanic_name (&service))) {
        snprintf (text, sizeof text, "400 E_RESERVED_SERVICE %s", sub.service);
        refusal = text;
    }
    //  The caller must be allowed to call the service itself, now and at
    //  each attempt (titanic_run.c)
    if (!refusal
        && !pigato__guard_allows (self->broker->guard, in->identity,
                                  PIGATO__VERB_CALL, sub.service)) {
        snprintf (text, sizeof text, "400 E_ACCESS_DENIED %s", sub.service);
        refusal = text;
    }
    pigato__titanic_record_t *record = NULL;
    if (!refusal && sub.key [0]) {
        //  The same key from the same identity: the same request
        char *index_key = s_key_of (in->identity, (const byte *) sub.key,
                                    strlen (sub.key));
        record = index_key
                   ? (pigato__titanic_record_t *) zhashx_lookup (self->keys,
                                                                 index_key)
                   : NULL;
        free (index_key);
        if (record) {
            self->counters.duplicates++;
            if (record->state == PIGATO__TITANIC_COMMITTING)
                s_wait (self, record, caller, false);
            else
                s_answer_id (self, caller, record);
            goto cleanup;
        }
    }
    size_t bytes = sub.body_size + strlen (sub.key)
                 + (sub.opts ? strlen (sub.opts) : 0);
    pigato__tenant_t *tenant = refusal ? NULL
                                       : pigato__core_tenant (self->core,
                                                              in->identity);
    if (!refusal && !tenant)
        refusal = "500 E_OVERLOADED the broker ran out of memory; try again "
                  "later";
    if (!refusal && self->core->over_memory)
        refusal = "500 E_OVERLOADED the broker is over its memory ceiling; "
                  "try again later";
    if (!refusal
        && pigato__table_size (self->records) >= PIGATO__TITANIC_RECORDS_MAX)
        refusal = "500 E_OVERLOADED the broker stores too many requests; try "
                  "again later";
    if (!refusal) {
        char quota [PIGATO_SERVICE_MAX + 300];
        if (pigato__core_quota_store (self->core, tenant, &service, bytes,
                                      quota, sizeof quota)) {
            snprintf (text, sizeof text, "500 %s", quota);
            refusal = text;
        }
    }
    if (refusal) {
        s_refuse (self, caller, refusal);
        goto cleanup;
    }
    byte id [PIGATO__STORE_ID_SIZE];
    do
        s_id_make (self, id);
    while (s_lookup (self, id));
    record = s_record_new (self, id, in->identity,
                           sub.key [0] ? (const byte *) sub.key : NULL,
                           strlen (sub.key), sub.service, sub.body_kind,
                           sub.body, sub.body_size, (const byte *) sub.opts,
                           sub.opts ? strlen (sub.opts) : 0);
    int64_t now = pigato__titanic_now (self);
    pigato__store_batch_t *batch = record ? s_batch (self) : NULL;
    if (record) {
        record->created = now;
        record->deadline = now + sub.ttl;
        record->keep = sub.keep;
        record->attempt_timeout = sub.timeout;
    }
    pigato__store_row_t row = { .identity = in->identity,
                                .key = sub.key [0] ? (const byte *) sub.key
                                                   : NULL,
                                .key_size = strlen (sub.key),
                                .service = sub.service,
                                .body_kind = sub.body_kind,
                                .body = sub.body,
                                .body_size = sub.body_size,
                                .opts = (const byte *) sub.opts,
                                .opts_size = sub.opts ? strlen (sub.opts) : 0,
                                .created = now,
                                .deadline = now + sub.ttl,
                                .keep = sub.keep };
    memcpy (row.id, id, sizeof id);
    if (!batch || pigato__store_batch_insert (batch, &row)
        || !s_wait (self, record, caller, false)) {
        if (record)
            s_record_free (self, record);
        s_refuse (self, caller,
                  "500 E_OVERLOADED the broker ran out of memory; try again "
                  "later");
    }
cleanup:
    free (sub.body);
    free (sub.opts);
}

//  --------------------------------------------------------------------------
//  titanic.reply and titanic.close

//  The record an id names for this identity. Another identity's record,
//  or one whose submission is not answered yet, is no record: the same
//  answer as an unknown id (no oracle).
static pigato__titanic_record_t *
s_record_of (pigato__titanic_t *self, const pigato__titanic_in_t *in)
{
    byte id [PIGATO__STORE_ID_SIZE];
    if (in->body_count < 1 || !s_id_parse (&in->body [0], id))
        return NULL;
    pigato__titanic_record_t *record = s_lookup (self, id);
    if (!record || record->state == PIGATO__TITANIC_COMMITTING
        || strneq (record->identity, in->identity ? in->identity : ""))
        return NULL;
    return record;
}

static void
s_fetch (pigato__titanic_t *self, const pigato__titanic_in_t *in)
{
    pigato__titanic_record_t *record = s_record_of (self, in);
    if (!record) {
        s_answer (self, &in->caller, 400, s_unknown_text, NULL, 0, 0);
        return;
    }
    if (!record->reply_stored) {
        s_answer (self, &in->caller, 300, s_pending_text, NULL, 0, 0);
        return;
    }
    pigato__bytes_t packed = { record->reply, record->reply_size };
    pigato__bytes_t frames [PIGATO__MDP_BODY_MAX];
    size_t count = pigato__mdp_unpack (&packed, frames, PIGATO__MDP_BODY_MAX);
    s_answer (self, &in->caller, 200, NULL, frames, count, record->status);
}

static void
s_close (pigato__titanic_t *self, const pigato__titanic_in_t *in)
{
    pigato__titanic_record_t *record = s_record_of (self, in);
    if (!record) {
        //  RFC 9: closing an unknown id is fine
        self->counters.closed++;
        s_answer_closed (self, &in->caller);
        return;
    }
    if (!s_wait (self, record, &in->caller, true))
        return;
    record->close_wanted = true;
    //  An attempt a worker holds, or a reply being stored, ends first; an
    //  attempt still queued is taken back
    if (pigato__titanic_unqueue (self, record)
        && (record->state == PIGATO__TITANIC_WAITING
            || record->state == PIGATO__TITANIC_REPLIED))
        pigato__titanic_delete (self, record);
}

bool
pigato__titanic_name (const pigato__bytes_t *service)
{
    static const char *names [] = { "titanic.request", "titanic.reply",
                                    "titanic.close" };
    if (service->size < 13 || service->size > 15
        || memcmp (service->data, "titanic.", 8))
        return false;
    for (size_t index = 0; index < 3; index++)
        if (service->size == strlen (names [index])
            && memcmp (service->data, names [index], service->size) == 0)
            return true;
    return false;
}

void
pigato__titanic_request (pigato__titanic_t *self,
                         const pigato__titanic_in_t *in)
{
    const pigato__bytes_t *name = &in->caller.service;
    if (name->size == 15 && memcmp (name->data, "titanic.request", 15) == 0)
        s_submit (self, in);
    else if (name->size == 13 && memcmp (name->data, "titanic.reply", 13) == 0)
        s_fetch (self, in);
    else
        s_close (self, in);
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
    if (strlen (row->identity) > PIGATO__NAME_MAX
        || row->key_size > PIGATO__TITANIC_KEY_MAX || strlen (row->service) < 1
        || strlen (row->service) > PIGATO_SERVICE_MAX
        || (row->body_kind != PIGATO__STORE_BODY_ONE
            && row->body_kind != PIGATO__STORE_BODY_FRAMES)
        || row->opts_size > PIGATO__OPTS_MAX || s_lookup (self, row->id)) {
        recovery->skipped++;
        return 0;
    }
    pigato__titanic_record_t *record = s_record_new (
        self, row->id, row->identity, row->key, row->key_size, row->service,
        row->body_kind, row->body, row->body_size, row->opts, row->opts_size);
    if (!record)
        return PIGATO_E_NOMEM;
    uint64_t time_half = 0;
    for (int index = 0; index < 8; index++)
        time_half = time_half << 8 | row->id [index];
    if (time_half > self->last_id)
        self->last_id = time_half;
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
            s_record_free (self, record);
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
    self->deny_log.limit = 200;
    self->random_used = sizeof self->random;  //  drawn at the first id
    self->records = pigato__table_new (s_record_match);
    self->keys = zhashx_new ();
    self->timers = pigato__heap_new ();
    if (!self->records || !self->keys || !self->timers) {
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
        rc = pigato__store_start (self->store, error, error_size);
    if (rc) {
        pigato__titanic_destroy (&self);
        return NULL;
    }
    char folder [1024];
    pigato__log (PIGATO_LOG_INFO,
                 "event=titanic_recovered store=%s pending=%" PRId64
                 " replied=%" PRId64 " bytes=%" PRId64 " skipped=%" PRId64
                 " ms=%" PRId64,
                 pigato__printable (dir, strlen (dir), folder, sizeof folder),
                 recovery.pending, recovery.replied, recovery.bytes,
                 recovery.skipped, pigato__now_ms () - started);
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
    free (self);
    *self_p = NULL;
}

int
pigato__titanic_fd (pigato__titanic_t *self)
{
    return pigato__store_fd (self->store);
}

void
pigato__titanic_turn (pigato__titanic_t *self)
{
    //  Timers first: what a write made due (the first attempts of the
    //  requests it stored) waits for the next turn, so that its answers
    //  leave with this turn's outbox, not after the attempts
    int64_t now = pigato__titanic_now (self);
    pigato__timer_t *timer;
    while ((timer = pigato__heap_pop_due (self->timers, now)))
        pigato__titanic_due (self, pigato__container_of (
                                       timer, pigato__titanic_record_t, timer));
    pigato__store_batch_t *done = pigato__store_done (self->store);
    if (done) {
        self->writing = false;
        s_written (self, done);
        pigato__store_batch_destroy (&done);
    }
    if (self->flight && now >= self->heartbeat_at) {
        pigato__titanic_heartbeat (self);
        self->heartbeat_at = now + self->core->heartbeat_ms;
    }
    if (!self->writing && self->batch
        && pigato__store_batch_size (self->batch) > 0
        && now >= self->write_after) {
        pigato__store_commit (self->store, &self->batch);
        self->writing = true;
    }
}

int64_t
pigato__titanic_wait (pigato__titanic_t *self)
{
    int64_t now = pigato__titanic_now (self);
    int64_t wait = INT64_MAX;
    pigato__timer_t *next = pigato__heap_peek (self->timers);
    if (next)
        wait = next->when - now;
    if (self->flight && self->heartbeat_at - now < wait)
        wait = self->heartbeat_at - now;
    if (!self->writing && self->batch
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
    if (streq (name, "commits"))
        return pigato__store_commits (self->store);
    return -1;
}
