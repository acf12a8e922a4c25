/*  =========================================================================
    alias.h - what workers see of a client: an opaque alias, never its
    routing id.

    Routing ids are chosen by peers. A worker that learnt a client's
    routing id could connect with it once that client has gone. So a
    worker gets, in the client field of a request or request heartbeat,
    a keyed 128-bit hash (SipHash-2-4, 128-bit output, libsodium's
    crypto_shorthash_siphashx24) of the client's routing id and its
    connection (fd and generation, conns.h), under a key drawn at random
    when the table is made: 32 lowercase hex characters. Workers echo it
    in their replies; the core keys requests by alias + rid, so it finds
    the request (and with it the real routing id) without a map. The
    alias is stable for one client connection, differs for the same
    routing id on another connection, and tells nothing about the routing
    id: taking over a client is a 128-bit guess.

    Hashing costs a few hundred instructions, so the last alias made for
    each connection is kept (a connection has one routing id; the cache
    checks it).
    =========================================================================
*/
#ifndef PIGATO_ALIAS_H_INCLUDED
#define PIGATO_ALIAS_H_INCLUDED

#include "../base/conns.h"
#include "../wire/codec.h"

//  An alias is this many printable bytes (lowercase hex, no NUL)
#define PIGATO__ALIAS_SIZE 32

typedef struct _pigato__aliases_t pigato__aliases_t;

//  A new table with a fresh random key. NULL if out of memory or
//  libsodium cannot start.
pigato__aliases_t *pigato__aliases_new (void);

//  Wipes the key and frees the table.
void pigato__aliases_destroy (pigato__aliases_t **self_p);

//  The alias of a client routing id on a connection (fd -1, unknown: the
//  routing id alone), PIGATO__ALIAS_SIZE bytes, borrowed until the next
//  call. Never fails: out of memory, it is computed without the cache.
const byte *pigato__aliases_get (pigato__aliases_t *self,
                                 const pigato__bytes_t *client,
                                 const pigato__conn_t *conn);

#endif
