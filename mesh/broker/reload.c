/*  =========================================================================
    reload.c - a policy reload (SIGHUP): swap the policy, then hold every
    live worker and request to it through the core (core.h).
    =========================================================================
*/
#include <string.h>
#include <time.h>
#include "broker_internal.h"

//  --------------------------------------------------------------------------
//  Policy reload (SIGHUP): swap the policy, then hold every live worker and
//  request to it. Workers that lost `serve` are disconnected; requests of
//  identities that left the policy are dropped; requests whose caller lost
//  `call` fail with E_ACCESS_DENIED.


//  Frees a list of keys and the keys.
static void
s_free_keys (zlistx_t **list_p)
{
    if (!*list_p)
        return;
    for (void *key = zlistx_first (*list_p); key; key = zlistx_next (*list_p))
        free (key);
    zlistx_destroy (list_p);
}

void
pigato__broker_reload (pigato_broker_t *self)
{
    char err [512];
    if (!pigato__guard_has_policy_file (self->guard)) {
        pigato__log (PIGATO_LOG_WARNING, "event=acl_reload_skipped "
                                         "reason=no_acl_file");
        return;
    }
    if (pigato__guard_reload (self->guard, err, sizeof err)) {
        self->metrics.acl_reload_failures++;
        pigato__log (PIGATO_LOG_ERROR,
                     "event=acl_reload_failed "
                     "policy=unchanged error=\"%s\"",
                     err);
        return;
    }
    self->metrics.acl_reloads++;
    self->metrics.acl_loaded_at = (int64_t) time (NULL);
    //  Every identity's limits are asked again
    pigato__core_set_limits (self->core, self->core->limits,
                             self->core->limits_arg);
    zlistx_t *workers = zlistx_new ();
    for (pigato__worker_t *worker =
             (pigato__worker_t *) zhashx_first (self->core->workers);
         worker;
         worker = (pigato__worker_t *) zhashx_next (self->core->workers))
        if (!pigato__guard_current (self->guard, worker->identity,
                                    worker->curve_key [0] ? worker->curve_key
                                                          : NULL)
            || !pigato__guard_allows (self->guard, worker->identity,
                                      PIGATO__VERB_SERVE,
                                      worker->service->name))
            zlistx_add_end (workers, worker);
    size_t workers_removed = zlistx_size (workers);
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (workers);
         worker; worker = (pigato__worker_t *) zlistx_next (workers))
        pigato__core_worker_remove (self->core, worker, "acl_reload", true);
    zlistx_destroy (&workers);

    //  The requests to drop or fail are remembered by key, not by pointer:
    //  ending one gives its worker room, and that dispatch may end others
    zlistx_t *dropped = zlistx_new ();
    zlistx_t *denied = zlistx_new ();
    size_t cursor = 0;
    pigato__request_t *request;
    while (dropped && denied
           && (request = (pigato__request_t *) pigato__table_next (
                   self->core->requests, &cursor))) {
        zlistx_t *list = NULL;
        if (!pigato__guard_current (self->guard, request->identity,
                                    request->curve_key [0] ? request->curve_key
                                                           : NULL))
            list = dropped;
        else if (!pigato__guard_allows (self->guard, request->identity,
                                        PIGATO__VERB_CALL,
                                        request->service->name))
            list = denied;
        pigato__bkey_t *key = list ? (pigato__bkey_t *) malloc (sizeof *key)
                                   : NULL;
        if (key) {
            pigato__bkey_copy (key, &request->key);
            zlistx_add_end (list, key);
        }
    }
    size_t requests_dropped = 0, requests_denied = 0;
    for (pigato__bkey_t *key =
             dropped ? (pigato__bkey_t *) zlistx_first (dropped) : NULL;
         key; key = (pigato__bkey_t *) zlistx_next (dropped)) {
        request = (pigato__request_t *) pigato__table_lookup (
            self->core->requests, key->hash, key);
        if (request) {
            pigato__core_request_drop (self->core, request);
            requests_dropped++;
        }
    }
    for (pigato__bkey_t *key = denied ? (pigato__bkey_t *) zlistx_first (denied)
                                      : NULL;
         key; key = (pigato__bkey_t *) zlistx_next (denied)) {
        request = (pigato__request_t *) pigato__table_lookup (
            self->core->requests, key->hash, key);
        if (request) {
            char text [PIGATO_SERVICE_MAX + 32];
            snprintf (text, sizeof text, "E_ACCESS_DENIED %s",
                      request->service->name);
            pigato__core_request_fail (self->core, request, text);
            requests_denied++;
        }
    }
    s_free_keys (&dropped);
    s_free_keys (&denied);
    if (self->titanic)
        pigato__titanic_reload (self->titanic);
    pigato__log (PIGATO_LOG_INFO,
                 "event=acl_reloaded identities=%zu rules=%zu "
                 "workers_removed=%zu requests_dropped=%zu "
                 "requests_denied=%zu",
                 pigato__guard_identity_count (self->guard),
                 pigato__guard_rule_count (self->guard), workers_removed,
                 requests_dropped, requests_denied);
}

//  --------------------------------------------------------------------------
//  The state hook: reloads and the stop, for a service manager.

void
pigato_broker_set_state_hook (pigato_broker_t *self,
                              pigato_broker_state_fn *hook, void *arg)
{
    self->state_hook = hook;
    self->state_arg = arg;
}

void
pigato__broker_tell (pigato_broker_t *self, int state)
{
    if (state == PIGATO_BROKER_STOPPING) {
        if (self->told_stopping)
            return;
        self->told_stopping = true;
    }
    if (self->state_hook)
        self->state_hook (self, state, self->state_arg);
}
