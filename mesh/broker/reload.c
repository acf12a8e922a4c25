/*  =========================================================================
    route_sweep.c - what follows a closed connection, a policy reload,
    request expiry and lost workers (route.h).
    =========================================================================
*/
#include <jansson.h>
#include <string.h>
#include "front.h"
#include "../wire/mdp.h"

//  --------------------------------------------------------------------------
//  Connections: a worker whose connection closed is gone now (its requests
//  retry or fail at once); requests of a closed client connection are
//  dropped, so no reply can reach a later owner of its routing id.

void
pigato__route_connection_lost (pigato_broker_t *self,
                               const pigato__conn_t *dead)
{
    pigato__conn_link_t *link;
    while ((link = pigato__conns_filed (self->conns, dead->fd,
                                        PIGATO__CONN_WORKERS))) {
        pigato__worker_t *worker =
            pigato__container_of (link, pigato__worker_t, conn_link);
        if (pigato__conn_same (&worker->conn, dead))
            pigato__route_worker_remove (self, worker, "disconnected", false);
        else
            pigato__conns_unfile (self->conns, link);   //  stale filing
    }
    size_t dropped = 0;
    while ((link = pigato__conns_filed (self->conns, dead->fd,
                                        PIGATO__CONN_REQUESTS))) {
        pigato__request_t *request =
            pigato__container_of (link, pigato__request_t, conn_link);
        if (!pigato__conn_same (&request->conn, dead)) {
            pigato__conns_unfile (self->conns, link);
            continue;
        }
        pigato__service_t *service =
            request->worker ? request->worker->service : NULL;
        pigato__route_request_finish (self, request);
        if (service)
            pigato__route_dispatch_room (self, service);
        dropped++;
    }
    if (dropped)
        pigato__log (PIGATO_LOG_DEBUG, "event=client_gone requests_dropped=%zu",
                     dropped);
}

//  --------------------------------------------------------------------------
//  Policy reload (SIGHUP): swap the policy, then hold every live worker and
//  request to it. Workers that lost `serve` are disconnected; requests of
//  identities that left the policy are dropped; requests whose caller lost
//  `call` fail with E_ACCESS_DENIED.


void
pigato__route_reload (pigato_broker_t *self)
{
    char err [512];
    if (!pigato__guard_has_policy_file (self->guard)) {
        pigato__log (PIGATO_LOG_WARNING, "event=acl_reload_skipped "
                     "reason=no_acl_file");
        return;
    }
    if (pigato__guard_reload (self->guard, err, sizeof err)) {
        pigato__log (PIGATO_LOG_ERROR, "event=acl_reload_failed "
                     "policy=unchanged error=\"%s\"", err);
        return;
    }
    zlistx_t *workers = zlistx_new ();
    for (pigato__worker_t *worker =
             (pigato__worker_t *) zhashx_first (self->workers);
         worker; worker = (pigato__worker_t *) zhashx_next (self->workers))
        if (!pigato__guard_current (self->guard, worker->identity,
                                    worker->curve_key [0] ? worker->curve_key
                                                          : NULL)
        ||  !pigato__guard_allows (self->guard, worker->identity,
                                   PIGATO__VERB_SERVE, worker->service->name))
            zlistx_add_end (workers, worker);
    size_t workers_removed = zlistx_size (workers);
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (workers);
         worker; worker = (pigato__worker_t *) zlistx_next (workers))
        pigato__route_worker_remove (self, worker, "acl_reload", true);
    zlistx_destroy (&workers);

    zlistx_t *dropped = zlistx_new ();
    zlistx_t *denied = zlistx_new ();
    size_t cursor = 0;
    pigato__request_t *request;
    while ((request = (pigato__request_t *) pigato__table_next (self->requests,
                                                                &cursor)))
        if (!pigato__guard_current (self->guard, request->identity,
                                    request->curve_key [0] ? request->curve_key
                                                           : NULL))
            zlistx_add_end (dropped, request);
        else
        if (!pigato__guard_allows (self->guard, request->identity,
                                   PIGATO__VERB_CALL, request->service->name))
            zlistx_add_end (denied, request);
    size_t requests_dropped = zlistx_size (dropped);
    size_t requests_denied = zlistx_size (denied);
    for (pigato__request_t *request =
             (pigato__request_t *) zlistx_first (dropped);
         request; request = (pigato__request_t *) zlistx_next (dropped)) {
        pigato__service_t *service =
            request->worker ? request->worker->service : NULL;
        pigato__route_request_finish (self, request);
        if (service)
            pigato__route_dispatch_room (self, service);
    }
    for (pigato__request_t *request =
             (pigato__request_t *) zlistx_first (denied);
         request; request = (pigato__request_t *) zlistx_next (denied)) {
        pigato__service_t *service =
            request->worker ? request->worker->service : NULL;
        char text [PIGATO_SERVICE_MAX + 32];
        snprintf (text, sizeof text, "E_ACCESS_DENIED %s",
                  request->service->name);
        pigato__route_request_fail (self, request, text);
        if (service)
            pigato__route_dispatch_room (self, service);
    }
    zlistx_destroy (&dropped);
    zlistx_destroy (&denied);
    pigato__log (PIGATO_LOG_INFO, "event=acl_reloaded identities=%zu rules=%zu "
                 "workers_removed=%zu requests_dropped=%zu "
                 "requests_denied=%zu",
                 pigato__guard_identity_count (self->guard),
                 pigato__guard_rule_count (self->guard), workers_removed,
                 requests_dropped, requests_denied);
}

//  --------------------------------------------------------------------------
//  Timers

void
pigato__route_expire_requests (pigato_broker_t *self, int64_t now)
{
    pigato__timer_t *timer;
    while ((timer = pigato__heap_pop_due (self->timers, now))) {
        pigato__request_t *request =
            pigato__container_of (timer, pigato__request_t, expiry);
        pigato__worker_t *worker = request->worker;
        pigato__service_t *service = worker ? worker->service : NULL;
        char rid [80], service_text [SERVICE_TEXT];
        pigato__log (PIGATO_LOG_DEBUG, "event=request_expired service=%s "
                     "rid=%s worker=%s",
                     pigato__route_service_text (request->service,
                                                 service_text),
                     pigato__printable (
                         pigato__request_rid (request).data,
                         pigato__request_rid (request).size, rid, sizeof rid),
                     worker ? worker->name : "-");
        self->counters.timeouts++;
        pigato__route_request_finish (self, request);
        if (service)
            pigato__route_dispatch_room (self, service);    //  slot free again
    }
}

void
pigato__route_check_workers (pigato_broker_t *self, int64_t now)
{
    zlistx_t *dead = NULL;
    for (pigato__worker_t *worker =
             (pigato__worker_t *) zhashx_first (self->workers);
         worker; worker = (pigato__worker_t *) zhashx_next (self->workers))
        if (worker->expires <= now) {
            if (!dead)
                dead = zlistx_new ();
            zlistx_add_end (dead, worker);
        }
        else
        if (worker->mdp) {
            //  RFC 18: the broker heartbeats its workers
            pigato__bytes_t to = pigato__worker_routing_id (worker);
            pigato__route_send_control (self, &to, 'W', PIGATO__HEARTBEAT,
                                        FRAMING_MDP);
        }
    if (!dead)
        return;
    for (pigato__worker_t *worker = (pigato__worker_t *) zlistx_first (dead);
         worker; worker = (pigato__worker_t *) zlistx_next (dead))
        pigato__route_worker_remove (self, worker, "expired", true);
    zlistx_destroy (&dead);
}
