/*  =========================================================================
    metrics.h - what operators see of a running broker: the Prometheus
    text exposition (--metrics-listen, metrics_http.c) and the $stats
    answer (JSON), both rendered on the broker's thread from the core's
    counters (stats.h, core.h), the broker's own and those below. The
    broker keeps the few figures that live nowhere else here. Not
    installed.
    =========================================================================
*/
#ifndef PIGATO_METRICS_H_INCLUDED
#define PIGATO_METRICS_H_INCLUDED

#include "metrics_http.h"

//  A $stats answer is at most PIGATO__STATS_ANSWER_MAX bytes: services
//  that do not fit are left out, whole, and it says "truncated": true
//  (the reply opts too, as for $dir).
#define PIGATO__STATS_ANSWER_MAX (256 * 1024)

//  The name whose `call` right shows the broker-wide part of $stats
//  (connections, handshakes, memory, ACL, certificates, every identity,
//  the services nobody registered), beside `call $stats`.
#define PIGATO__STATS_BROKER_NAME "$stats.broker"

//  Certificates whose expiry is watched (expiry.c).
typedef enum {
    PIGATO__CERT_BROKER = 0,  //  the broker's own (--key NAME.crt)
    PIGATO__CERT_CA,          //  CAs of the ACL's trust lines
    PIGATO__CERT_IDENTITY,    //  identity certificates from trust folders
    PIGATO__CERT_KINDS
} pigato__cert_kind_t;

typedef struct {
    pigato__metrics_http_t *http;  //  --metrics-listen, NULL if off
    int64_t started_at;            //  epoch seconds (pigato_broker_new)
    int64_t connections_accepted;  //  every accepted connection
    int64_t acl_reloads;           //  SIGHUP reloads that took effect
    int64_t acl_reload_failures;   //  and those that kept the old policy
    int64_t acl_loaded_at;         //  epoch s of the last that took
                                   //  effect (0: the policy of the start)
    int64_t cert_not_after [PIGATO__CERT_KINDS];  //  earliest notAfter
                                                  //  (epoch s), 0: none
} pigato__metrics_t;

//  The broker's Prometheus text (format 0.0.4): malloc'd, its size in
//  *size; NULL if out of memory.
char *pigato__metrics_text (pigato_broker_t *self, size_t *size);

//  The core's $stats answer (pigato__stats_answer_fn, core.h); arg is
//  the broker. Services identity may call (only the one named, if only
//  is not NULL), identity's own counters, and with `call $stats.broker`
//  the broker-wide part.
char *pigato__metrics_stats_answer (void *arg, const char *identity,
                                    const char *only, bool *truncated);

//  From the loop when the scrape server's fd is readable: renders the
//  text and hands it to the server if a scrape waits.
void pigato__metrics_serve (pigato_broker_t *self);

#endif
