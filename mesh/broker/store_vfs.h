/*  =========================================================================
    store_vfs.h - the store's SQLite VFS (store.c): the default one, but
    contiguous writes to the WAL or the database between two syncs leave
    in one system call (a checkpoint's 1,000 pages, in page order, in a
    few).
    SQLite writes a WAL frame as two writes (its header, then the page):
    a commit of 8 pages was 16 pwrite calls, 100 us on our 2-core VM (a
    system call is dear in a VM), for 10 us as one. Nothing changes for
    durability or for SQLite: a WAL commit frame's page (a transaction's
    last write) leaves at once with what was gathered, so COMMIT sees a
    failed write (a full disk) and rolls back; the store's sync threads
    sync only after COMMIT; and every sync, read, size, truncation or
    close of the file writes what was gathered first. Not installed.
    =========================================================================
*/
#ifndef PIGATO_STORE_VFS_H_INCLUDED
#define PIGATO_STORE_VFS_H_INCLUDED

#include <sqlite3.h>

//  The VFS's name for sqlite3_open_v2, registered at the first call (not
//  as the default); NULL if it could not be (then the default VFS
//  serves, unchanged).
const char *pigato__store_vfs (void);

//  Writes what a file of ours gathered: nothing after a COMMIT (its commit
//  frame left at once), but the store calls it then anyway, before its
//  sync threads' fdatasync, so that nothing of a commit can wait in a
//  buffer. A SQLite code; SQLITE_OK for a file that is not ours.
int pigato__store_vfs_flush (sqlite3_file *file);

#endif
