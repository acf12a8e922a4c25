/*  =========================================================================
    metrics_http.h - the broker's metrics over HTTP (--metrics-listen):
    libmicrohttpd answers GET /metrics in its own thread with the last
    text the broker's thread published. The HTTP thread touches nothing
    of the broker: when the text it holds is older than
    PIGATO__METRICS_FRESH_MS it asks for a new one (an eventfd the broker
    polls) and waits for it, at most PIGATO__METRICS_WAIT_MS; the
    broker renders it on its own thread and hands it over under a mutex.

    What a scraper can make the broker do is bounded: at most
    PIGATO__METRICS_CONNECTIONS connections at once (each closed after
    PIGATO__METRICS_IDLE_S idle seconds), only GET and HEAD of /metrics
    (404 for another path, 405 for another method), and at most one
    rendering per PIGATO__METRICS_FRESH_MS however many scrapes come.
    Not installed.
    =========================================================================
*/
#ifndef PIGATO_METRICS_HTTP_H_INCLUDED
#define PIGATO_METRICS_HTTP_H_INCLUDED

#include "../base/internal.h"

#define PIGATO__METRICS_CONNECTIONS  4     //  open at once
#define PIGATO__METRICS_IDLE_S       10    //  idle connection closed after
#define PIGATO__METRICS_FRESH_MS     500   //  a text this young is served
#define PIGATO__METRICS_WAIT_MS      2000  //  waited for a new one at most
#define PIGATO__METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

typedef struct _pigato__metrics_http_t pigato__metrics_http_t;

//  Listens on address "HOST:PORT" (HOST: an IPv4 address, an IPv6
//  address in brackets, a name, or * for every interface; PORT 0: any
//  free one) and starts serving. 0, or with the reason in err
//  PIGATO_E_INVALID (not HOST:PORT, a name that does not resolve),
//  PIGATO_E_BIND (cannot listen there) or PIGATO_E_NOMEM.
int pigato__metrics_http_new (const char *address,
                              pigato__metrics_http_t **self_p, char *err,
                              size_t err_size) PIGATO__MUST_CHECK;

//  Stops serving (a scrape waiting for a text gets 503) and frees.
void pigato__metrics_http_destroy (pigato__metrics_http_t **self_p);

//  The address listened on, "HOST:PORT" with the port bound (borrowed).
const char *pigato__metrics_http_address (pigato__metrics_http_t *self);

//  A file descriptor that is readable while a scrape waits for a text.
int pigato__metrics_http_fd (pigato__metrics_http_t *self);

//  Clears that fd; true if a text is wanted.
bool pigato__metrics_http_wanted (pigato__metrics_http_t *self);

//  Hands a text over (takes it: malloc'd, size bytes), for every scrape
//  waiting and the ones within PIGATO__METRICS_FRESH_MS.
void pigato__metrics_http_publish (pigato__metrics_http_t *self, char **text_p,
                                   size_t size);

#endif
