/*  =========================================================================
    store_vfs.h - the store's SQLite VFS (store.c): the default one, but
    contiguous writes to the WAL or the database between two syncs leave
    in one system call (a checkpoint's 1,000 pages, in page order, in a
    few).
    SQLite writes a WAL frame as two writes (its header, then the page):
    a commit of 8 pages was 16 pwrite calls, 100 us on our 2-core VM (a
    system call is dear in a VM), for 10 us as one. Nothing changes for
    durability: the sync that makes a commit durable writes what was
    gathered first, and every read, size, truncation or close of the
    file does too, so SQLite never sees the difference. Not installed.
    =========================================================================
*/
#ifndef PIGATO_STORE_VFS_H_INCLUDED
#define PIGATO_STORE_VFS_H_INCLUDED

//  The VFS's name for sqlite3_open_v2, registered at the first call (not
//  as the default); NULL if it could not be (then the default VFS
//  serves, unchanged).
const char *pigato__store_vfs (void);

#endif
