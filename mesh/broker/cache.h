/*  =========================================================================
    cache.h - the broker's reply cache (pigato's opts `cache: MS`): a final
    reply a worker marked cacheable answers identical requests (same
    service name, same body bytes) until it expires. Bounded: entries are
    dropped least recently used first once the cache holds more than its
    byte budget. The broker consults it only after the ACL allowed the
    caller to call the service.
    =========================================================================
*/
#ifndef PIGATO_CACHE_H_INCLUDED
#define PIGATO_CACHE_H_INCLUDED

#include "../wire/codec.h"

#define PIGATO__CACHE_DEFAULT_BYTES (64 * 1024 * 1024)

typedef struct _pigato__cache_t pigato__cache_t;

typedef struct {
    pigato__bytes_t data;  //  the reply body
    pigato__bytes_t opts;  //  the reply opts, as the worker sent them
} pigato__cached_t;

//  A cache holding at most max_bytes (keys, bodies, replies and a fixed
//  overhead per entry). max_bytes 0 disables caching.
pigato__cache_t *pigato__cache_new (size_t max_bytes);
void pigato__cache_destroy (pigato__cache_t **self_p);

//  Changes the budget; evicts at once if over it.
void pigato__cache_set_max (pigato__cache_t *self, size_t max_bytes);

//  Stores a reply for (service, body) until `expires` (ms on
//  pigato__now_ms ()'s clock), replacing any entry for the same key.
//  Returns 0, or -1 if it does not fit the budget or memory ran out
//  (nothing stored).
int pigato__cache_put (pigato__cache_t *self, const char *service,
                       const pigato__bytes_t *body, const pigato__bytes_t *data,
                       const pigato__bytes_t *opts,
                       int64_t expires) PIGATO__MUST_CHECK;

//  The live reply for (service, body), or false. A hit becomes the most
//  recently used; an expired entry is dropped. The reply's bytes stay
//  valid until the next put or set_max.
bool pigato__cache_get (pigato__cache_t *self, const char *service,
                        const pigato__bytes_t *body, int64_t now,
                        pigato__cached_t *reply);

//  Counters: entries held, bytes held, hits.
size_t pigato__cache_entries (pigato__cache_t *self);
size_t pigato__cache_bytes (pigato__cache_t *self);
int64_t pigato__cache_hits (pigato__cache_t *self);

//  Reads `cache` (ms) from a final reply's opts: > 0 if the reply may be
//  cached for that long, 0 otherwise (no opts, no key, not a positive
//  number, unreadable JSON).
int64_t pigato__cache_ttl (const pigato__bytes_t *opts);

#endif
