/*  =========================================================================
    store_format.c - the durable store's rows (store_format.h): packing
    and reading the meta and reply columns, and the conversion of a
    format-1 store. Reads never trust a row: every length is checked
    against what is there.
    =========================================================================
*/
#include <string.h>
#include "store_format.h"

static void
s_put_u64 (byte *out, uint64_t value)
{
    for (int index = 0; index < 8; index++)
        out [index] = (byte) (value >> (8 * index));
}

static uint64_t
s_get_u64 (const byte *in)
{
    uint64_t value = 0;
    for (int index = 7; index >= 0; index--)
        value = value << 8 | in [index];
    return value;
}

static void
s_put_u32 (byte *out, uint32_t value)
{
    for (int index = 0; index < 4; index++)
        out [index] = (byte) (value >> (8 * index));
}

static uint32_t
s_get_u32 (const byte *in)
{
    return (uint32_t) in [0] | (uint32_t) in [1] << 8 | (uint32_t) in [2] << 16
         | (uint32_t) in [3] << 24;
}

int64_t
pigato__store_seq (const byte *id)
{
    uint64_t value = 0;
    for (int index = 0; index < 8; index++)
        value = value << 8 | id [index];
    return (int64_t) value;
}

//  id's last 8 bytes, three times, the kind, four lengths
#define META_FIXED (8 + 3 * 8 + 1 + 4 * 4)

size_t
pigato__store_meta_size (const pigato__store_row_t *row)
{
    return META_FIXED + strlen (row->identity) + 1 + strlen (row->service) + 1
         + (row->key ? row->key_size : 0) + (row->opts ? row->opts_size : 0);
}

//  A length and the bytes (and a NUL after them if text).
static byte *
s_put_field (byte *out, const void *data, size_t size, bool text)
{
    s_put_u32 (out, (uint32_t) size);
    if (size)
        memcpy (out + 4, data, size);
    out += 4 + size;
    if (text)
        *out++ = 0;
    return out;
}

void
pigato__store_meta_pack (const pigato__store_row_t *row, byte *out)
{
    memcpy (out, row->id + 8, 8);
    s_put_u64 (out + 8, (uint64_t) row->created);
    s_put_u64 (out + 16, (uint64_t) row->deadline);
    s_put_u64 (out + 24, (uint64_t) row->keep);
    out [32] = (byte) row->body_kind;
    out += 33;
    out = s_put_field (out, row->identity, strlen (row->identity), true);
    out = s_put_field (out, row->service, strlen (row->service), true);
    out = s_put_field (out, row->key, row->key ? row->key_size : 0, false);
    s_put_field (out, row->opts, row->opts ? row->opts_size : 0, false);
}

//  Reads a length and its bytes at *at (and the NUL after them if text,
//  with none before it); false if they run past end.
static bool
s_get_field (const byte **at, const byte *end, const byte **data, size_t *size,
             bool text)
{
    if (end - *at < 4)
        return false;
    uint32_t length = s_get_u32 (*at);
    *at += 4;
    if ((size_t) (end - *at) < (size_t) length + (text ? 1 : 0))
        return false;
    if (text && ((*at) [length] != 0 || memchr (*at, 0, length)))
        return false;
    *data = *at;
    *size = length;
    *at += length + (text ? 1 : 0);
    return true;
}

bool
pigato__store_meta_unpack (int64_t seq, const byte *meta, size_t size,
                           pigato__store_row_t *row)
{
    if (!meta || size < 33)
        return false;
    uint64_t time_half = (uint64_t) seq;
    for (int index = 0; index < 8; index++)
        row->id [index] = (byte) (time_half >> (56 - 8 * index));
    memcpy (row->id + 8, meta, 8);
    row->created = (int64_t) s_get_u64 (meta + 8);
    row->deadline = (int64_t) s_get_u64 (meta + 16);
    row->keep = (int64_t) s_get_u64 (meta + 24);
    row->body_kind = meta [32];
    const byte *at = meta + 33, *end = meta + size;
    const byte *identity, *service;
    size_t identity_size, service_size;
    if (!s_get_field (&at, end, &identity, &identity_size, true)
        || !s_get_field (&at, end, &service, &service_size, true)
        || !s_get_field (&at, end, &row->key, &row->key_size, false)
        || !s_get_field (&at, end, &row->opts, &row->opts_size, false)
        || at != end)
        return false;
    row->identity = (const char *) identity;
    row->service = (const char *) service;
    if (!row->key_size)
        row->key = NULL;
    if (!row->opts_size)
        row->opts = NULL;
    return true;
}

void
pigato__store_reply_head (int64_t replied_at, int status, byte *out)
{
    s_put_u64 (out, (uint64_t) replied_at);
    s_put_u32 (out + 8, (uint32_t) status);
}

bool
pigato__store_reply_unpack (const byte *data, size_t size,
                            pigato__store_row_t *row)
{
    if (!data || size < PIGATO__STORE_REPLY_HEAD)
        return false;
    row->replied = true;
    row->replied_at = (int64_t) s_get_u64 (data);
    row->status = (int) (int32_t) s_get_u32 (data + 8);
    row->reply = data + PIGATO__STORE_REPLY_HEAD;
    row->reply_size = size - PIGATO__STORE_REPLY_HEAD;
    return true;
}

//  --------------------------------------------------------------------------
//  Format 1 to 2

//  Writes one format-1 row (the columns of read) through write.
static int
s_convert_row (sqlite3_stmt *read, sqlite3_stmt *write)
{
    pigato__store_row_t row;
    memset (&row, 0, sizeof row);
    const void *id = sqlite3_column_blob (read, 0);
    if (sqlite3_column_bytes (read, 0) != PIGATO__STORE_ID_SIZE || !id)
        return SQLITE_OK;  //  never one of ours: left behind
    memcpy (row.id, id, PIGATO__STORE_ID_SIZE);
    row.identity = (const char *) sqlite3_column_text (read, 1);
    row.key = (const byte *) sqlite3_column_blob (read, 2);
    row.key_size = (size_t) sqlite3_column_bytes (read, 2);
    row.service = (const char *) sqlite3_column_text (read, 3);
    row.body_kind = sqlite3_column_int (read, 4);
    const void *body = sqlite3_column_blob (read, 5);
    int body_size = sqlite3_column_bytes (read, 5);
    row.opts = (const byte *) sqlite3_column_blob (read, 6);
    row.opts_size = (size_t) sqlite3_column_bytes (read, 6);
    row.created = sqlite3_column_int64 (read, 7);
    row.deadline = sqlite3_column_int64 (read, 8);
    row.keep = sqlite3_column_int64 (read, 9);
    bool replied = sqlite3_column_type (read, 10) != SQLITE_NULL;
    const void *reply = sqlite3_column_blob (read, 12);
    size_t reply_size = (size_t) sqlite3_column_bytes (read, 12);
    if (!row.identity || !row.service)
        return SQLITE_OK;
    size_t meta_size = pigato__store_meta_size (&row);
    byte *meta = (byte *) malloc (meta_size);
    byte *packed = replied
                     ? (byte *) malloc (PIGATO__STORE_REPLY_HEAD + reply_size)
                     : NULL;
    int rc = meta && (packed || !replied) ? SQLITE_OK : SQLITE_NOMEM;
    if (rc == SQLITE_OK) {
        pigato__store_meta_pack (&row, meta);
        sqlite3_reset (write);
        rc = sqlite3_bind_int64 (write, 1, pigato__store_seq (row.id));
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob (write, 2, meta, (int) meta_size, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_blob (write, 3, body ? body : "", body_size,
                                SQLITE_STATIC);
    if (rc == SQLITE_OK && replied) {
        pigato__store_reply_head (sqlite3_column_int64 (read, 10),
                                  sqlite3_column_int (read, 11), packed);
        if (reply_size)
            memcpy (packed + PIGATO__STORE_REPLY_HEAD, reply, reply_size);
        rc = sqlite3_bind_blob (write, 4, packed,
                                (int) (PIGATO__STORE_REPLY_HEAD + reply_size),
                                SQLITE_STATIC);
    }
    else if (rc == SQLITE_OK)
        rc = sqlite3_bind_null (write, 4);
    if (rc == SQLITE_OK)
        rc = sqlite3_step (write) == SQLITE_DONE
               ? SQLITE_OK
               : sqlite3_errcode (sqlite3_db_handle (write));
    sqlite3_reset (write);
    free (meta);
    free (packed);
    return rc;
}

int
pigato__store_convert_1 (sqlite3 *db, char *error, size_t error_size)
{
    sqlite3_stmt *read = NULL, *write = NULL;
    int rc = sqlite3_exec (db, "CREATE TABLE request_2 " PIGATO__STORE_COLUMNS,
                           NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2 (
            db,
            "SELECT id, identity, key, service, body_kind, body, opts, "
            "created, deadline, keep, replied, status, reply FROM request",
            -1, &read, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2 (db,
                                 "INSERT INTO request_2 (seq, meta, body, "
                                 "reply) VALUES (?1, ?2, ?3, ?4)",
                                 -1, &write, NULL);
    while (rc == SQLITE_OK) {
        rc = sqlite3_step (read);
        if (rc == SQLITE_ROW)
            rc = s_convert_row (read, write);
        else if (rc == SQLITE_DONE) {
            rc = SQLITE_OK;
            break;
        }
    }
    sqlite3_finalize (read);
    sqlite3_finalize (write);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec (db,
                           "DROP TABLE request; ALTER TABLE request_2 RENAME "
                           "TO request",
                           NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return 0;
    pigato__errorf (error, error_size, "converting format 1: %s",
                    sqlite3_errmsg (db));
    return PIGATO_E_STORE;
}
