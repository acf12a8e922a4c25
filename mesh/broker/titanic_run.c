/*  =========================================================================
    titanic_run.c - durable requests at work (titanic.h): each attempt is
    a request to the routing core like a client's, from the identity that
    submitted it (checked against the policy again first), on the
    connection PIGATO__CONN_TITANIC, with the durable id as its rid and in
    its opts ("titanic"), so that a worker can tell a request it has done
    before. A broker error that a retry may cure (the worker was lost,
    rejects, a quota, an overload) or an attempt that outlives its
    timeout is tried again after a backoff; a final reply, an error that
    will not change (E_ACCESS_DENIED, ...) or the time to live ending
    (E_EXPIRED) is the request's outcome.
    =========================================================================
*/
#include <sodium.h>
#include <string.h>
#include "titanic.h"
#include "front.h"
#include "../wire/mdp.h"

#define TITANIC_CLIENT "$titanic"  //  the routing id the core records

//  The caller the core records for a record's attempts: replies come back
//  to it (send.c hands them to pigato__titanic_reply). A record of an MDP
//  client keeps its body frames packed, as the core does for MDP callers.
static pigato__caller_t
s_caller (const pigato__titanic_record_t *record)
{
    pigato__caller_t caller = {
        .framing = record->body_kind == PIGATO__STORE_BODY_FRAMES
                     ? PIGATO__FRAMING_MDP
                     : PIGATO__FRAMING_NATIVE,
        .client = BYTES (TITANIC_CLIENT),
        .conn = { PIGATO__CONN_TITANIC, 0 },
        .rid = { (const byte *) record->hex, PIGATO__TITANIC_ID_TEXT },
        .service = BYTES (record->service)
    };
    return caller;
}

//  True for a broker error that another attempt will not change.
static bool
s_final_error (const char *text)
{
    static const char *finals [] = { "E_ACCESS_DENIED", "E_INVALID_OPTS",
                                     "E_WORKER_NOT_FOUND",
                                     "E_RESERVED_SERVICE" };
    size_t code = strcspn (text, " ");
    for (size_t index = 0; index < sizeof finals / sizeof finals [0]; index++)
        if (code == strlen (finals [index])
            && memcmp (text, finals [index], code) == 0)
            return true;
    return false;
}

//  The record a reply from the core is for: an attempt still out.
static pigato__titanic_record_t *
s_flying (pigato__titanic_t *self, const pigato__caller_t *to)
{
    pigato__titanic_record_t *record = pigato__titanic_lookup (self, &to->rid);
    return record && record->state == PIGATO__TITANIC_IN_FLIGHT ? record : NULL;
}

//  The core's request of a record's attempt, or NULL.
static pigato__request_t *
s_core_request (pigato__titanic_t *self, const pigato__titanic_record_t *record)
{
    pigato__caller_t caller = s_caller (record);
    return pigato__core_request_of (self->core, &caller.client, &caller.conn,
                                    &caller.rid);
}

void
pigato__titanic_land (pigato__titanic_t *self, pigato__titanic_record_t *record,
                      bool drop)
{
    if (record->state != PIGATO__TITANIC_IN_FLIGHT)
        return;
    if (record->prev)
        record->prev->next = record->next;
    else
        self->flight = record->next;
    if (record->next)
        record->next->prev = record->prev;
    record->prev = record->next = NULL;
    record->state = PIGATO__TITANIC_WAITING;
    pigato__request_t *request = drop ? s_core_request (self, record) : NULL;
    if (request)
        pigato__core_request_drop (self->core, request);
}

//  The next attempt after a backoff: 250 ms doubling to 30 s, jittered
//  (a half to the whole of it), never past the time to live.
static void
s_retry_later (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    int shift = record->attempts > 1 ? record->attempts - 1 : 0;
    int64_t delay = PIGATO__TITANIC_BACKOFF_MIN << (shift < 7 ? shift : 7);
    if (delay > PIGATO__TITANIC_BACKOFF_MAX)
        delay = PIGATO__TITANIC_BACKOFF_MAX;
    delay = delay / 2
          + (int64_t) randombytes_uniform ((uint32_t) delay / 2 + 1);
    int64_t at = pigato__titanic_now (self) + delay;
    record->state = PIGATO__TITANIC_WAITING;
    pigato__titanic_schedule (self, record,
                              at < record->deadline ? at : record->deadline);
}

//  The attempt's deadline: its timeout (opts), within the time to live.
static void
s_attempt_deadline (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    int64_t at = record->deadline;
    if (record->attempt_timeout >= 0
        && pigato__titanic_now (self) + record->attempt_timeout < at)
        at = pigato__titanic_now (self) + record->attempt_timeout;
    pigato__titanic_schedule (self, record, at);
}

//  The identity that submitted the record may still call its service.
static bool
s_allowed (pigato__titanic_t *self, const pigato__titanic_record_t *record)
{
    pigato__guard_t *guard = self->broker->guard;
    return pigato__guard_current (guard, record->identity, NULL)
        && pigato__guard_allows (guard, record->identity, PIGATO__VERB_CALL,
                                 record->service);
}

//  Ends a record whose identity may no longer call its service.
static void
s_deny (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    self->counters.denied++;
    char service [PIGATO__SERVICE_TEXT], identity [PIGATO__NAME_MAX * 4 + 4];
    //  A reload may end many at once: 200 lines a second, then a count
    if (pigato__log_level >= PIGATO_LOG_INFO
        && pigato__ratelimit_allow_at (&self->deny_log, "titanic_denied",
                                       PIGATO_LOG_INFO))
        pigato__log (
            PIGATO_LOG_INFO,
            "event=titanic_denied id=%s identity=%s service=%s", record->hex,
            pigato__printable (record->identity, strlen (record->identity),
                               identity, sizeof identity),
            pigato__printable (record->service, strlen (record->service),
                               service, sizeof service));
    char text [PIGATO_SERVICE_MAX + 32];
    snprintf (text, sizeof text, "E_ACCESS_DENIED %s", record->service);
    pigato__titanic_finish_error (self, record, text);
}

static void
s_expire (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    self->counters.expired++;
    pigato__log (PIGATO_LOG_DEBUG, "event=titanic_expired id=%s attempts=%d",
                 record->hex, record->attempts);
    pigato__titanic_finish_error (self, record,
                                  "E_EXPIRED no final reply within the "
                                  "request's time to live");
}

//  Parks a WAITING record whose service nobody can serve: it waits for
//  a worker here, where it costs nothing, or for its time to live.
static void
s_park (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    pigato__titanic_record_t *head = (pigato__titanic_record_t *)
        zhashx_lookup (self->parked, record->service);
    record->park_prev = NULL;
    record->park_next = head;
    if (head)
        head->park_prev = record;
    zhashx_update (self->parked, record->service, record);
    record->parked = true;
    self->parked_count++;
    pigato__titanic_schedule (self, record, record->deadline);
}

void
pigato__titanic_unpark (pigato__titanic_t *self,
                        pigato__titanic_record_t *record)
{
    if (!record->parked)
        return;
    if (record->park_next)
        record->park_next->park_prev = record->park_prev;
    if (record->park_prev)
        record->park_prev->park_next = record->park_next;
    else if (record->park_next)
        zhashx_update (self->parked, record->service, record->park_next);
    else
        zhashx_delete (self->parked, record->service);
    record->parked = false;
    record->park_prev = record->park_next = NULL;
    self->parked_count--;
}

void
pigato__titanic_unpark_servable (pigato__titanic_t *self)
{
    zlistx_t *names = zhashx_keys (self->parked);
    int64_t now = pigato__titanic_now (self);
    for (const char *name = names ? (const char *) zlistx_first (names) : NULL;
         name; name = (const char *) zlistx_next (names)) {
        if (!pigato__core_servable (self->core, name))
            continue;
        pigato__titanic_record_t *record;
        while ((record = (pigato__titanic_record_t *) zhashx_lookup (
                    self->parked, name))) {
            pigato__titanic_unpark (self, record);
            pigato__titanic_schedule (self, record, now);
        }
    }
    zlistx_destroy (&names);
}

void
pigato__titanic_attempt (pigato__titanic_t *self,
                         pigato__titanic_record_t *record)
{
    pigato__titanic_unpark (self, record);
    if (!s_allowed (self, record)) {
        s_deny (self, record);
        return;
    }
    //  A name parked already is one nobody serves: the turn re-checks
    //  parked names after any worker registered, before its timers
    if (zhashx_lookup (self->parked, record->service)
        || !pigato__core_servable (self->core, record->service)) {
        s_park (self, record);
        return;
    }
    //  {"titanic":ID,"attempt":N, then the opts the client gave}
    char opts [PIGATO__OPTS_MAX + 1];
    int used = snprintf (opts, sizeof opts,
                         "{\"titanic\":\"%s\",\"attempt\":%d", record->hex,
                         record->attempts + 1);
    if (record->opts_size > 2 && used + record->opts_size <= PIGATO__OPTS_MAX) {
        opts [used++] = ',';
        memcpy (opts + used, record->opts + 1, record->opts_size - 1);
        used += (int) record->opts_size - 1;
    }
    else
        opts [used++] = '}';
    pigato__bytes_t opts_bytes = { (const byte *) opts, (size_t) used };
    pigato__submit_t submit = { .caller = s_caller (record),
                                .name = record->service,
                                .body = { record->body, record->body_size },
                                .body_part = NULL,
                                .opts = &opts_bytes,
                                .identity = record->identity,
                                .curve_key = NULL };
    record->state = PIGATO__TITANIC_IN_FLIGHT;
    record->prev = NULL;
    record->next = self->flight;
    if (self->flight)
        self->flight->prev = record;
    self->flight = record;
    if (record->attempts++ > 0)
        self->counters.retries++;
    self->counters.attempts++;
    char error [PIGATO_SERVICE_MAX + 600];
    int rc = pigato__core_submit (self->core, &submit, error, sizeof error);
    //  The core may have answered at once (a cached reply): the record
    //  moved on then
    if (record->state != PIGATO__TITANIC_IN_FLIGHT)
        return;
    if (rc == 0) {
        s_attempt_deadline (self, record);
        return;
    }
    pigato__titanic_land (self, record, false);
    //  A quota, an overload, a broker that drains: another attempt later
    //  (after a restart, from the store); only what no attempt changes
    //  is the request's answer
    if (rc == PIGATO_E_NOMEM || !error [0] || !s_final_error (error))
        s_retry_later (self, record);
    else
        pigato__titanic_finish_error (self, record, error);
}

void
pigato__titanic_due (pigato__titanic_t *self, pigato__titanic_record_t *record)
{
    int64_t now = pigato__titanic_now (self);
    pigato__titanic_unpark (self, record);
    switch (record->state) {
        case PIGATO__TITANIC_IN_FLIGHT:
            //  The attempt timed out (or the time to live ended)
            pigato__titanic_land (self, record, true);
            if (record->close_wanted)
                pigato__titanic_delete (self, record);
            else if (now >= record->deadline)
                s_expire (self, record);
            else
                s_retry_later (self, record);
            break;
        case PIGATO__TITANIC_WAITING:
            if (record->close_wanted)
                pigato__titanic_delete (self, record);
            else if (now >= record->deadline)
                s_expire (self, record);
            else
                pigato__titanic_attempt (self, record);
            break;
        case PIGATO__TITANIC_REPLIED:
            if (now >= record->replied_at + record->keep)
                pigato__titanic_delete (self, record);
            else
                pigato__titanic_schedule (self, record,
                                          record->replied_at + record->keep);
            break;
        case PIGATO__TITANIC_REPLYING:
            //  A write that failed or found no memory: again
            pigato__titanic_finish (self, record, record->status, record->reply,
                                    record->reply_size);
            break;
        case PIGATO__TITANIC_DELETING:
            pigato__titanic_delete (self, record);
            break;
        default: break;
    }
}

bool
pigato__titanic_unqueue (pigato__titanic_t *self,
                         pigato__titanic_record_t *record)
{
    if (record->state != PIGATO__TITANIC_IN_FLIGHT)
        return true;
    pigato__request_t *request = s_core_request (self, record);
    if (request && request->worker)
        return false;
    pigato__titanic_land (self, record, true);
    return true;
}

void
pigato__titanic_reply (pigato__titanic_t *self, const pigato__caller_t *to,
                       int type, int status, const pigato__bytes_t *body,
                       size_t body_count)
{
    pigato__titanic_record_t *record = s_flying (self, to);
    if (!record)
        return;  //  late: the attempt was given up
    if (type == PIGATO__PARTIAL) {
        //  Partial replies are not stored; they keep the attempt alive
        s_attempt_deadline (self, record);
        return;
    }
    pigato__titanic_land (self, record, false);
    size_t size = pigato__mdp_packed_size (body, body_count);
    byte *packed = size == PIGATO__MDP_PACK_INVALID
                     ? NULL
                     : (byte *) malloc (size ? size : 1);
    if (!packed) {
        s_retry_later (self, record);
        return;
    }
    pigato__mdp_pack (packed, size, body, body_count);
    pigato__titanic_finish (self, record, status ? -1 : 0, packed, size);
    free (packed);
}

void
pigato__titanic_error (pigato__titanic_t *self, const pigato__caller_t *to,
                       const char *text)
{
    pigato__titanic_record_t *record = s_flying (self, to);
    if (!record)
        return;
    pigato__titanic_land (self, record, false);
    if (record->close_wanted)
        pigato__titanic_delete (self, record);
    else if (s_final_error (text)) {
        if (strncmp (text, "E_ACCESS_DENIED", 15) == 0)
            self->counters.denied++;
        pigato__titanic_finish_error (self, record, text);
    }
    else
        s_retry_later (self, record);
}

void
pigato__titanic_reload (pigato__titanic_t *self)
{
    //  Collected first: ending one may touch the table
    zlistx_t *denied = zlistx_new ();
    size_t cursor = 0;
    pigato__titanic_record_t *record;
    while (denied
           && (record = (pigato__titanic_record_t *) pigato__table_next (
                   self->records, &cursor)))
        if ((record->state == PIGATO__TITANIC_WAITING
             || record->state == PIGATO__TITANIC_IN_FLIGHT)
            && !s_allowed (self, record))
            zlistx_add_end (denied, record);
    for (record = denied ? (pigato__titanic_record_t *) zlistx_first (denied)
                         : NULL;
         record; record = (pigato__titanic_record_t *) zlistx_next (denied)) {
        pigato__titanic_land (self, record, true);
        if (record->close_wanted)
            pigato__titanic_delete (self, record);
        else
            s_deny (self, record);
    }
    zlistx_destroy (&denied);
}
