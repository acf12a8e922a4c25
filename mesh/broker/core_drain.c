/*  =========================================================================
    core_drain.c - the core's part of a drain (core.h; the broker's part,
    signals, timeout and summary, is drain.c): new requests are refused
    from the start, clients are told, requests no worker has seen go back
    to clients that can send them elsewhere, and what is left at the
    timeout is abandoned.
    =========================================================================
*/
#include <string.h>
#include "core.h"

//  The requests held now, in an array the caller frees (ending one never
//  frees another: pigato__core_request_end makes no dispatch). NULL if
//  there are none or memory ran out (*count 0).
static pigato__request_t **
s_requests (pigato__core_t *self, size_t *count)
{
    *count = 0;
    size_t size = pigato__table_size (self->requests);
    pigato__request_t **requests = size ? (pigato__request_t **) malloc (
                                       size * sizeof *requests)
                                        : NULL;
    if (!requests)
        return NULL;
    size_t cursor = 0;
    pigato__request_t *request;
    while (*count < size
           && (request = (pigato__request_t *) pigato__table_next (
                   self->requests, &cursor)))
        requests [(*count)++] = request;
    return requests;
}

//  True if a request may go back to its client: it never reached a worker
//  here, its client reads E_DRAINING as "send it elsewhere" (libpigato,
//  which speaks native), and it does not name a worker of this broker.
static bool
s_may_move (const pigato__request_t *request)
{
    return !request->worker && request->dispatches == 0 && !request->target
        && request->framing == PIGATO__FRAMING_NATIVE;
}

size_t
pigato__core_drain (pigato__core_t *self)
{
    self->draining = true;
    size_t count;
    pigato__request_t **requests = s_requests (self, &count);
    if (!requests) {
        if (pigato__table_size (self->requests))
            pigato__log (PIGATO_LOG_WARNING,
                         "event=drain_degraded reason=nomem "
                         "detail=requests_not_moved");
        return 0;
    }
    //  Clients first learn that no new request may come (once per client
    //  connection: the alias names it), then which of theirs come back
    zhashx_t *told = zhashx_new ();
    for (size_t index = 0; told && index < count; index++) {
        pigato__request_t *request = requests [index];
        if (request->framing == PIGATO__FRAMING_MDP)
            continue;
        pigato__bytes_t alias = pigato__request_alias (request);
        char key [PIGATO__ALIAS_SIZE + 1];
        memcpy (key, alias.data, PIGATO__ALIAS_SIZE);
        key [PIGATO__ALIAS_SIZE] = 0;
        if (zhashx_lookup (told, key))
            continue;
        zhashx_insert (told, key, (void *) 1);
        pigato__caller_t caller = pigato__core_caller (request);
        self->emit->notice (self->emit_arg, &caller);
    }
    zhashx_destroy (&told);
    size_t moved = 0;
    for (size_t index = 0; index < count; index++)
        if (s_may_move (requests [index])) {
            pigato__core_request_end (self, requests [index],
                                      PIGATO__E_DRAINING);
            moved++;
        }
    free (requests);
    return moved;
}

size_t
pigato__core_drain_abandon (pigato__core_t *self, const char *text)
{
    size_t count;
    pigato__request_t **requests = s_requests (self, &count);
    for (size_t index = 0; index < count; index++)
        pigato__core_request_end (self, requests [index], text);
    free (requests);
    if (!requests && pigato__table_size (self->requests)) {
        //  No memory for the list: one at a time from the table's start
        size_t cursor = 0;
        pigato__request_t *request;
        while ((request = (pigato__request_t *) pigato__table_next (
                    self->requests, &cursor))) {
            pigato__core_request_end (self, request, text);
            cursor = 0;
            count++;
        }
    }
    return count;
}
