/*  =========================================================================
    titanic_service.c - the three RFC 9 services of durable requests
    (titanic.h) in every framing: titanic.request (read from MDP frames or
    pigato data and opts, checked, stored: titanic.c), titanic.reply and
    titanic.close, and the answers (now, or once a write is on disk).

    Answers (docs/protocol.md, "Durable requests"): an MDP client gets RFC
    9's frames (a status frame, then the content); a pigato client gets
    one data frame: the content with status 0 for 200, else status -1
    and the status text as a JSON string ("300 E_PENDING ..."), and the
    status code in the reply opts ({"titanic":300}).

    Bodies, opts and replies are tenants' data: they are never logged.
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "titanic.h"
#include "front.h"
#include "../wire/mdp.h"

static const char *s_pending_text = "300 E_PENDING no reply yet; ask again "
                                    "later";
static const char *s_unknown_text = "400 E_UNKNOWN no such request";

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
    if (code == 200)
        strcpy (opts_text, "{\"titanic\":200}");  //  the usual: no printf
    else
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
    quoted [0] = '"';
    memcpy (quoted + 1, record->hex, PIGATO__TITANIC_ID_TEXT);
    quoted [PIGATO__TITANIC_ID_TEXT + 1] = '"';
    quoted [PIGATO__TITANIC_ID_TEXT + 2] = 0;
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
void
pigato__titanic_answer_waiters (pigato__titanic_t *self,
                                pigato__titanic_record_t *record, bool close,
                                const char *text)
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
//  titanic.request


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

//  The body of a pigato client's submission (its one data frame).
static void
s_read_body (const pigato__titanic_in_t *in, pigato__titanic_submission_t *out)
{
    out->body_kind = PIGATO__STORE_BODY_ONE;
    out->body_size = in->body_count ? in->body [0].size : 0;
    out->body = (byte *) malloc (out->body_size ? out->body_size : 1);
    if (out->body && out->body_size)
        memcpy (out->body, in->body [0].data, out->body_size);
}

//  The opts members that are titanic's, not the worker's.
static const char *s_ours [] = { "service", "key",     "ttl",    "keep",
                                 "retry",   "attempt", "titanic" };
#define OURS_COUNT (sizeof s_ours / sizeof s_ours [0])

//  The usual submission read without a JSON parser (jansson took most of
//  a submission's time): opts in the compact flat form
//  (pigato__flat_next) with a valid service, key, ttl and keep, no member
//  twice, and at most 8 members for the worker, which go to it as they
//  were written. True if read; false leaves the submission to
//  pigato__titanic_read's parser (which also gives every refusal), out untouched.
static bool
s_read_flat (const pigato__titanic_in_t *in, pigato__titanic_submission_t *out)
{
    enum { OTHERS_MAX = 8 };
    const byte *text = in->opts ? in->opts->data : NULL;
    size_t size = in->opts ? in->opts->size : 0;
    int64_t timeout;
    int retry;
    //  Also refuses a string timeout or retry, and workerId
    if (!text
        || !pigato__opts_fast (text, size, PIGATO_TIMEOUT_MS, &timeout, &retry))
        return false;
    pigato__flat_t member, others [OTHERS_MAX];
    size_t other_count = 0, cursor = 0;
    const pigato__flat_t *service = NULL, *key = NULL;
    pigato__flat_t mine [OURS_COUNT];
    bool seen [OURS_COUNT] = { false };
    int64_t ttl = PIGATO__TITANIC_TTL_DEFAULT;
    int64_t keep = PIGATO__TITANIC_KEEP_DEFAULT;
    int rc;
    while ((rc = pigato__flat_next (text, size, &cursor, &member)) == 1) {
        size_t which = 0;
        while (which < OURS_COUNT
               && (member.key_size != strlen (s_ours [which])
                   || memcmp (member.key, s_ours [which], member.key_size)))
            which++;
        if (which == OURS_COUNT) {
            if (member.key_size == 8 && memcmp (member.key, "workerId", 8) == 0)
                return false;  //  refused by the parser, whatever it is
            for (size_t index = 0; index < other_count; index++)
                if (others [index].key_size == member.key_size
                    && memcmp (others [index].key, member.key, member.key_size)
                           == 0)
                    return false;  //  twice: refused by the parser
            if (other_count == OTHERS_MAX)
                return false;
            others [other_count++] = member;
            continue;
        }
        if (seen [which])
            return false;
        seen [which] = true;
        mine [which] = member;
        bool string = member.kind == PIGATO__FLAT_STRING;
        int64_t value = member.integer;
        bool duration = member.kind == PIGATO__FLAT_INTEGER && value >= 1
                     && value <= PIGATO__TITANIC_TIME_MAX;
        if (which == 0 && string && member.value_size >= 1
            && member.value_size <= PIGATO_SERVICE_MAX)
            service = &mine [which];
        else if (which == 1 && string && member.value_size >= 1
                 && member.value_size <= PIGATO__TITANIC_KEY_MAX)
            key = &mine [which];  //  printable: a flat string is
        else if (which == 2 && duration)
            ttl = value;
        else if (which == 3 && duration)
            keep = value;
        else if (which < 4)
            return false;  //  the parser refuses it
    }
    if (rc < 0 || !service)
        return false;
    //  The worker's members, as written: what a compact writer would write
    char worker [PIGATO__OPTS_MAX];
    size_t used = 0;
    for (size_t index = 0; index < other_count; index++) {
        if (used + others [index].text_size + 2 > PIGATO__OPTS_MAX - 80)
            return false;  //  too long: refused by the parser
        worker [used++] = index ? ',' : '{';
        memcpy (worker + used, others [index].text, others [index].text_size);
        used += others [index].text_size;
    }
    if (other_count) {
        worker [used++] = '}';
        out->opts = (char *) malloc (used + 1);
        if (!out->opts)
            return false;
        memcpy (out->opts, worker, used);
        out->opts [used] = 0;
    }
    memcpy (out->service, service->value, service->value_size);
    out->service [service->value_size] = 0;
    if (key) {
        memcpy (out->key, key->value, key->value_size);
        out->key [key->value_size] = 0;
    }
    out->ttl = ttl;
    out->keep = keep;
    out->timeout = timeout;
    s_read_body (in, out);
    return true;
}

//  A pigato client's submission (titanic.h).
const char *
pigato__titanic_read (const pigato__titanic_in_t *in, bool parser,
                      pigato__titanic_submission_t *out, char *text,
                      size_t text_size)
{
    if (!parser && s_read_flat (in, out))
        return NULL;
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
        for (size_t index = 0; index < OURS_COUNT; index++)
            json_object_del (opts, s_ours [index]);
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
        s_read_body (in, out);
    }
    json_decref (opts);
    return refusal;
}

//  An MDP client's submission, as RFC 9 has it: the service, then the
//  body frames (kept packed, and delivered as frames).
static const char *
s_read_mdp (const pigato__titanic_in_t *in, pigato__titanic_submission_t *out)
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
    pigato__titanic_submission_t sub = { .opts = NULL };
    char text [PIGATO_SERVICE_MAX + 600];
    const char *refusal = caller->framing == PIGATO__FRAMING_MDP
                            ? s_read_mdp (in, &sub)
                            : pigato__titanic_read (in, false, &sub, text,
                                                    sizeof text);
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
        char *index_key = pigato__titanic_key_of (
            in->identity, (const byte *) sub.key, strlen (sub.key));
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
        pigato__titanic_id_make (self, id);
    while (pigato__titanic_find (self, id));
    record = pigato__titanic_record_new (
        self, id, in->identity, sub.key [0] ? (const byte *) sub.key : NULL,
        strlen (sub.key), sub.service, sub.body_kind, sub.body, sub.body_size,
        (const byte *) sub.opts, sub.opts ? strlen (sub.opts) : 0);
    int64_t now = pigato__titanic_now (self);
    pigato__store_batch_t *batch = record ? pigato__titanic_batch (self) : NULL;
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
            pigato__titanic_record_free (self, record);
        s_refuse (self, caller,
                  "500 E_OVERLOADED the broker ran out of memory; try again "
                  "later");
    }
    else if (pigato__store_batch_size (batch) >= PIGATO__TITANIC_EARLY_COMMIT)
        //  The store does not wait for the rest of this turn's input: an
        //  idle one starts now, a busy one finds the batch queued (or,
        //  with one queued already, it goes at the end of the turn)
        pigato__titanic_commit (self);
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
    if (in->body_count < 1 || !pigato__titanic_id_parse (&in->body [0], id))
        return NULL;
    pigato__titanic_record_t *record = pigato__titanic_find (self, id);
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
