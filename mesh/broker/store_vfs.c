/*  =========================================================================
    store_vfs.c - the store's SQLite VFS (store_vfs.h): a shim over the
    default VFS (the shape of SQLite's own test_vfstrace.c). Each file is
    our header followed by the default VFS's file; the WAL and the
    database gather contiguous writes in a buffer that goes out as one
    write.
    =========================================================================
*/
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "store_vfs.h"
#include "store.h"

#define VFS_NAME "pigato-store"
//  Bytes gathered at most: the unix VFS writes at most 0x1ffff bytes in
//  one call (it masks the size: SQLite's own writes never pass 64 KiB
//  and a frame header), and reports a longer write as a full disk
#define GATHER_MAX 0x1ffff

typedef struct {
    sqlite3_file base;      //  our methods
    sqlite3_file *real;     //  the default VFS's file, right after us
    int gather;             //  writes are gathered (the WAL, the database)
    int wal;                //  the WAL
    int commit_page;        //  the next write is a commit frame's page
    unsigned char *buffer;  //  the writes gathered, contiguous
    size_t used;
    size_t size;             //  allocated
    sqlite3_int64 position;  //  where buffer [0] goes in the file
} s_file_t;

static sqlite3_vfs *s_real;  //  the default VFS
static sqlite3_vfs s_vfs;    //  ours
static const char *s_name;   //  VFS_NAME once registered

//  Writes what was gathered (one write); the default VFS's code if that
//  fails (then nothing stays gathered: SQLite rolls back and writes the
//  frames again).
static int
s_flush (s_file_t *self)
{
    if (!self->used)
        return SQLITE_OK;
    int rc = self->real->pMethods->xWrite (self->real, self->buffer,
                                           (int) self->used, self->position);
    self->used = 0;
    return rc;
}

static int
s_close (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    int closed = self->real->pMethods
                   ? self->real->pMethods->xClose (self->real)
                   : SQLITE_OK;
    free (self->buffer);
    self->buffer = NULL;
    return rc != SQLITE_OK ? rc : closed;
}

static int
s_read (sqlite3_file *file, void *data, int amount, sqlite3_int64 offset)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK
             ? rc
             : self->real->pMethods->xRead (self->real, data, amount, offset);
}

//  The size of a WAL frame's header, and where in it a commit frame says
//  the database's size in pages (0 in other frames): SQLite's file format
#define WAL_HEADER       32
#define WAL_FRAME_HEADER 24
#define WAL_FRAME_COMMIT 4

static int s_gather (s_file_t *self, const void *data, int amount,
                     sqlite3_int64 offset);

//  A write: gathered, except that the page of a commit frame (the last a
//  transaction writes) leaves at once with what was gathered, so that a
//  failure (a full disk) is COMMIT's and rolls the transaction back. With
//  synchronous=NORMAL no sync follows to write them, and SQLite counts a
//  transaction done once it wrote that frame.
static int
s_write (sqlite3_file *file, const void *data, int amount, sqlite3_int64 offset)
{
    s_file_t *self = (s_file_t *) file;
    if (!self->wal)
        return s_gather (self, data, amount, offset);
    bool commit = self->commit_page;
    self->commit_page = 0;
    if (amount == WAL_FRAME_HEADER && offset >= WAL_HEADER) {
        const unsigned char *header = (const unsigned char *) data;
        self->commit_page = (header [WAL_FRAME_COMMIT]
                             | header [WAL_FRAME_COMMIT + 1]
                             | header [WAL_FRAME_COMMIT + 2]
                             | header [WAL_FRAME_COMMIT + 3])
                         != 0;
    }
    int rc = s_gather (self, data, amount, offset);
    return rc == SQLITE_OK && commit ? s_flush (self) : rc;
}

static int
s_gather (s_file_t *self, const void *data, int amount, sqlite3_int64 offset)
{
    if (!self->gather || amount <= 0 || amount > GATHER_MAX)
        return self->real->pMethods->xWrite (self->real, data, amount, offset);
    //  Only what continues the gathered writes joins them
    if (self->used
        && (offset != self->position + (sqlite3_int64) self->used
            || self->used + (size_t) amount > GATHER_MAX)) {
        int rc = s_flush (self);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (self->used + (size_t) amount > self->size) {
        size_t size = self->size ? self->size : 65536;
        while (size < self->used + (size_t) amount)
            size *= 2;
        unsigned char *buffer = (unsigned char *) realloc (self->buffer, size);
        if (!buffer) {
            //  No room to gather: written as it comes
            int rc = s_flush (self);
            return rc != SQLITE_OK
                     ? rc
                     : self->real->pMethods->xWrite (self->real, data, amount,
                                                     offset);
        }
        self->buffer = buffer;
        self->size = size;
    }
    if (!self->used)
        self->position = offset;
    memcpy (self->buffer + self->used, data, (size_t) amount);
    self->used += (size_t) amount;
    return SQLITE_OK;
}

static int
s_truncate (sqlite3_file *file, sqlite3_int64 size)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK ? rc
                           : self->real->pMethods->xTruncate (self->real, size);
}

static int
s_sync (sqlite3_file *file, int flags)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK ? rc
                           : self->real->pMethods->xSync (self->real, flags);
}

static int
s_file_size (sqlite3_file *file, sqlite3_int64 *size)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK ? rc
                           : self->real->pMethods->xFileSize (self->real, size);
}

//  The rest goes straight to the default VFS's file (what SQLite asks of
//  a file's size or contents went through a flush above)

static int
s_lock (sqlite3_file *file, int level)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xLock (self->real, level);
}

static int
s_unlock (sqlite3_file *file, int level)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xUnlock (self->real, level);
}

static int
s_check_reserved (sqlite3_file *file, int *out)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xCheckReservedLock (self->real, out);
}

static int
s_file_control (sqlite3_file *file, int op, void *arg)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK
             ? rc
             : self->real->pMethods->xFileControl (self->real, op, arg);
}

static int
s_sector_size (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xSectorSize (self->real);
}

static int
s_device_characteristics (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xDeviceCharacteristics (self->real);
}

static int
s_shm_map (sqlite3_file *file, int region, int size, int extend,
           void volatile **out)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xShmMap (self->real, region, size, extend,
                                          out);
}

static int
s_shm_lock (sqlite3_file *file, int offset, int count, int flags)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xShmLock (self->real, offset, count, flags);
}

static void
s_shm_barrier (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    self->real->pMethods->xShmBarrier (self->real);
}

static int
s_shm_unmap (sqlite3_file *file, int delete_flag)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xShmUnmap (self->real, delete_flag);
}

static int
s_fetch (sqlite3_file *file, sqlite3_int64 offset, int amount, void **out)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK
             ? rc
             : self->real->pMethods->xFetch (self->real, offset, amount, out);
}

static int
s_unfetch (sqlite3_file *file, sqlite3_int64 offset, void *page)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xUnfetch (self->real, offset, page);
}

//  Version 3 methods; a default file of an older version gets them only
//  up to its own (pMethods->iVersion is set from the default file's)
static sqlite3_io_methods s_methods [4];

//  Writes zeros up to PIGATO__STORE_WAL_PRESIZE bytes and syncs them:
//  frames then overwrite written blocks of a file that keeps its size,
//  and a commit's fdatasync has no metadata to write (110 us instead of
//  220 for 32 KiB here). SQLite reads zeros as no frame (a frame's salt
//  and checksum must match the header's). Failures are left to SQLite's
//  own writes to find.
static void
s_presize (sqlite3_file *real)
{
    sqlite3_int64 size = 0;
    if (real->pMethods->xFileSize (real, &size) != SQLITE_OK
        || size >= PIGATO__STORE_WAL_PRESIZE)
        return;
    static const unsigned char zeros [65536];
    while (size < PIGATO__STORE_WAL_PRESIZE) {
        int amount = PIGATO__STORE_WAL_PRESIZE - size < (int) sizeof zeros
                       ? (int) (PIGATO__STORE_WAL_PRESIZE - size)
                       : (int) sizeof zeros;
        if (real->pMethods->xWrite (real, zeros, amount, size) != SQLITE_OK)
            return;
        size += amount;
    }
    real->pMethods->xSync (real, SQLITE_SYNC_NORMAL);
}

static int
s_open (sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
        int *out_flags)
{
    (void) vfs;
    s_file_t *self = (s_file_t *) file;
    memset (self, 0, sizeof *self);
    self->real = (sqlite3_file *) (self + 1);
    int rc = s_real->xOpen (s_real, name, self->real, flags, out_flags);
    if (self->real->pMethods) {
        int version = self->real->pMethods->iVersion;
        self->base.pMethods = &s_methods [version < 1   ? 1
                                          : version > 3 ? 3
                                                        : version];
        //  The WAL's frames at each commit, the database's pages at each
        //  checkpoint (in page order: runs of them are contiguous)
        self->gather = (flags & (SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_DB)) != 0;
        self->wal = (flags & SQLITE_OPEN_WAL) != 0;
        if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL))
            s_presize (self->real);
    }
    return rc;
}

static int
s_delete (sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void) vfs;
    return s_real->xDelete (s_real, name, sync_dir);
}

static int
s_access (sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void) vfs;
    return s_real->xAccess (s_real, name, flags, out);
}

static int
s_full_pathname (sqlite3_vfs *vfs, const char *name, int size, char *out)
{
    (void) vfs;
    return s_real->xFullPathname (s_real, name, size, out);
}

static int
s_randomness (sqlite3_vfs *vfs, int size, char *out)
{
    (void) vfs;
    return s_real->xRandomness (s_real, size, out);
}

static int
s_sleep (sqlite3_vfs *vfs, int microseconds)
{
    (void) vfs;
    return s_real->xSleep (s_real, microseconds);
}

static int
s_current_time (sqlite3_vfs *vfs, double *out)
{
    (void) vfs;
    return s_real->xCurrentTime (s_real, out);
}

static int
s_last_error (sqlite3_vfs *vfs, int size, char *out)
{
    (void) vfs;
    return s_real->xGetLastError ? s_real->xGetLastError (s_real, size, out)
                                 : 0;
}

static void *
s_dl_open (sqlite3_vfs *vfs, const char *name)
{
    (void) vfs;
    return s_real->xDlOpen (s_real, name);
}

static void
s_dl_error (sqlite3_vfs *vfs, int size, char *out)
{
    (void) vfs;
    s_real->xDlError (s_real, size, out);
}

static void (*s_dl_sym (sqlite3_vfs *vfs, void *handle,
                        const char *name)) (void)
{
    (void) vfs;
    return s_real->xDlSym (s_real, handle, name);
}

static void
s_dl_close (sqlite3_vfs *vfs, void *handle)
{
    (void) vfs;
    s_real->xDlClose (s_real, handle);
}

static int
s_current_time_int64 (sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void) vfs;
    return s_real->xCurrentTimeInt64 (s_real, out);
}

static void
s_register (void)
{
    s_real = sqlite3_vfs_find (NULL);
    if (!s_real || s_real->iVersion < 2 || !s_real->xCurrentTimeInt64
        || !s_real->xDlOpen)
        return;
    for (int version = 1; version <= 3; version++) {
        sqlite3_io_methods methods = { version,
                                       s_close,
                                       s_read,
                                       s_write,
                                       s_truncate,
                                       s_sync,
                                       s_file_size,
                                       s_lock,
                                       s_unlock,
                                       s_check_reserved,
                                       s_file_control,
                                       s_sector_size,
                                       s_device_characteristics,
                                       version >= 2 ? s_shm_map : NULL,
                                       version >= 2 ? s_shm_lock : NULL,
                                       version >= 2 ? s_shm_barrier : NULL,
                                       version >= 2 ? s_shm_unmap : NULL,
                                       version >= 3 ? s_fetch : NULL,
                                       version >= 3 ? s_unfetch : NULL };
        s_methods [version] = methods;
    }
    s_vfs.iVersion = 2;
    s_vfs.szOsFile = (int) sizeof (s_file_t) + s_real->szOsFile;
    s_vfs.mxPathname = s_real->mxPathname;
    s_vfs.zName = VFS_NAME;
    s_vfs.xOpen = s_open;
    s_vfs.xDelete = s_delete;
    s_vfs.xAccess = s_access;
    s_vfs.xFullPathname = s_full_pathname;
    s_vfs.xDlOpen = s_dl_open;
    s_vfs.xDlError = s_dl_error;
    s_vfs.xDlSym = s_dl_sym;
    s_vfs.xDlClose = s_dl_close;
    s_vfs.xRandomness = s_randomness;
    s_vfs.xSleep = s_sleep;
    s_vfs.xCurrentTime = s_current_time;
    s_vfs.xGetLastError = s_last_error;
    s_vfs.xCurrentTimeInt64 = s_current_time_int64;
    if (sqlite3_vfs_register (&s_vfs, 0) == SQLITE_OK)
        s_name = VFS_NAME;
}

int
pigato__store_vfs_flush (sqlite3_file *file)
{
    if (!file || !file->pMethods || file->pMethods->xClose != s_close)
        return SQLITE_OK;
    return s_flush ((s_file_t *) file);
}

const char *
pigato__store_vfs (void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once (&once, s_register);
    return s_name;
}
