/*  =========================================================================
    store_format.h - the durable store's file format (store.c), format 2:
    one table, a row per durable request,

        request (seq INTEGER PRIMARY KEY,  the id's first 8 bytes
                 meta BLOB NOT NULL,       the rest of the request, packed
                 body BLOB NOT NULL,       empty once replied
                 reply BLOB)               NULL until the final reply

    seq is the id's time-ordered half (titanic.h), read as a big-endian
    signed 64-bit integer: unique in a store (it grows with every id, also
    across restarts), so rows append to the table's b-tree and are found
    by an integer. Packed, a row costs SQLite about half the work that a
    column per field did (format 1: 12k instructions a row, 6k now).

    meta: the id's last 8 bytes; created, deadline, keep (int64,
    little-endian); the body's kind (1 byte); then identity, service, key
    and opts, each a 32-bit little-endian length and its bytes, identity
    and service followed by a NUL (key and opts: length 0 for none).
    reply: replied_at (int64), status (int32), then the reply's packed
    frames (mdp.h).

    Format 1 (a column per field, keyed by the 16-byte id) is converted at
    open, in the transaction that checks the file. Not installed.
    =========================================================================
*/
#ifndef PIGATO_STORE_FORMAT_H_INCLUDED
#define PIGATO_STORE_FORMAT_H_INCLUDED

#include <sqlite3.h>
#include "store.h"

#define PIGATO__STORE_COLUMNS                                                  \
    "(seq INTEGER PRIMARY KEY, meta BLOB NOT NULL, body BLOB NOT NULL,"        \
    " reply BLOB)"
#define PIGATO__STORE_REPLY_HEAD 12  //  replied_at, status

//  The row key of an id (its first 8 bytes).
int64_t pigato__store_seq (const byte *id);

//  A request's meta column: its size, and the bytes (out holds that
//  size). Fields as in row (key and opts NULL for none).
size_t pigato__store_meta_size (const pigato__store_row_t *row);
void pigato__store_meta_pack (const pigato__store_row_t *row, byte *out);

//  Reads a row's meta column (and the id, from seq) into row; the
//  strings and bytes it sets are borrowed from meta. False if meta is
//  not a packed request (a damaged or foreign row: skipped).
bool pigato__store_meta_unpack (int64_t seq, const byte *meta, size_t size,
                                pigato__store_row_t *row);

//  The reply column: its head (PIGATO__STORE_REPLY_HEAD bytes into out),
//  the packed frames follow. Unpack sets row's replied, replied_at,
//  status and reply (borrowed); false if data is too short.
void pigato__store_reply_head (int64_t replied_at, int status, byte *out);
bool pigato__store_reply_unpack (const byte *data, size_t size,
                                 pigato__store_row_t *row);

//  Converts a format-1 store to this format, inside the caller's
//  transaction. 0, or PIGATO_E_STORE with SQLite's reason in error.
int pigato__store_convert_1 (sqlite3 *db, char *error, size_t error_size);

#endif
