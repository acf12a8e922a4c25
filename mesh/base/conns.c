/*  =========================================================================
    conns.c - connection generations per fd (see conns.h)
    =========================================================================
*/
#include <stdlib.h>
#include <string.h>
#include "conns.h"

#define FD_LIMIT (1 << 22)  //  ignore absurd fds rather than grow

typedef enum {
    FD_UNKNOWN = PIGATO__CONN_UNKNOWN,
    FD_OPEN = PIGATO__CONN_OPEN,
    FD_CLOSED = PIGATO__CONN_CLOSED
} fd_state_t;

typedef pigato__conn_slot_t slot_t;

pigato__conns_t *
pigato__conns_new (void)
{
    return (pigato__conns_t *) calloc (1, sizeof (pigato__conns_t));
}

void
pigato__conns_destroy (pigato__conns_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    for (size_t fd = 0; fd < (*self_p)->size; fd++) {
        free ((*self_p)->slots [fd].identity);
        free ((*self_p)->slots [fd].log_note);
        free ((*self_p)->slots [fd].client);
    }
    free ((*self_p)->slots);
    free (*self_p);
    *self_p = NULL;
}

//  The slot for fd, growing the table; NULL for a negative or absurd fd
//  or if out of memory (callers then treat the fd as unknown).
static slot_t *
s_slot (pigato__conns_t *self, int fd, bool grow)
{
    if (fd < 0 || fd >= FD_LIMIT)
        return NULL;
    if ((size_t) fd >= self->size) {
        if (!grow)
            return NULL;
        size_t size = self->size ? self->size : 1024;
        while (size <= (size_t) fd)
            size *= 2;
        slot_t *slots = (slot_t *) realloc (self->slots,
                                            size * sizeof (slot_t));
        if (!slots)
            return NULL;
        memset (slots + self->size, 0, (size - self->size) * sizeof (slot_t));
        self->slots = slots;
        self->size = size;
    }
    return &self->slots [fd];
}

void
pigato__conns_accepted (pigato__conns_t *self, int fd)
{
    slot_t *slot = s_slot (self, fd, true);
    if (slot) {
        slot->generation++;
        slot->state = FD_OPEN;
        if (slot->dying)
            self->dying--;
        slot->dying = false;
        slot->out_check = false;
        slot->bytes_in = slot->bytes_out = slot->frames_out = 0;
        slot->out_checked = 0;
        free (slot->identity);
        slot->identity = NULL;
        free (slot->log_note);
        slot->log_note = NULL;
        free (slot->client);
        slot->client = NULL;
    }
}

void
pigato__conns_set_identity (pigato__conns_t *self, int fd, const char *identity)
{
    slot_t *slot = s_slot (self, fd, false);
    if (slot && !slot->identity && identity)
        slot->identity = strdup (identity);
}

void
pigato__conns_set_client (pigato__conns_t *self, int fd, const void *id,
                          size_t size)
{
    slot_t *slot = s_slot (self, fd, false);
    if (!slot || slot->client || !size || size > 255)
        return;
    slot->client = (uint8_t *) malloc (size);
    if (slot->client) {
        memcpy (slot->client, id, size);
        slot->client_size = (uint8_t) size;
    }
}

bool
pigato__conns_in_handshake (pigato__conns_t *self, const pigato__conn_t *conn)
{
    slot_t *slot = s_slot (self, conn->fd, false);
    return slot && slot->state == FD_OPEN && !slot->dying && slot->bytes_in == 0
        && slot->generation == conn->generation;
}

bool
pigato__conns_dying (pigato__conns_t *self, int fd)
{
    slot_t *slot = s_slot (self, fd, false);
    if (!slot || slot->state != FD_OPEN || slot->dying)
        return false;
    slot->dying = true;
    self->dying++;
    return true;
}


pigato__conn_t
pigato__conns_disconnected (pigato__conns_t *self, int fd)
{
    pigato__conn_t dead = { -1, 0 };
    slot_t *slot = s_slot (self, fd, false);
    if (slot && slot->state == FD_OPEN) {
        dead.fd = fd;
        dead.generation = slot->generation;
        slot->state = FD_CLOSED;
        if (slot->dying)
            self->dying--;
        slot->dying = false;
        free (slot->identity);
        slot->identity = NULL;
        free (slot->log_note);
        slot->log_note = NULL;
        free (slot->client);
        slot->client = NULL;
    }
    return dead;
}

int
pigato__conns_lookup (pigato__conns_t *self, int fd, pigato__conn_t *conn)
{
    slot_t *slot = s_slot (self, fd, false);
    if (!slot || slot->state == FD_UNKNOWN) {
        conn->fd = -1;  //  unknown: no binding possible
        conn->generation = 0;
        return PIGATO__CONN_UNKNOWN;
    }
    conn->fd = fd;
    conn->generation = slot->generation;
    return slot->state == FD_OPEN ? PIGATO__CONN_OPEN : PIGATO__CONN_CLOSED;
}

bool
pigato__conn_same (const pigato__conn_t *a, const pigato__conn_t *b)
{
    return a->fd == b->fd && a->generation == b->generation;
}

void
pigato__conn_link_init (pigato__conn_link_t *link)
{
    link->prev = link->next = NULL;
    link->fd = -1;
    link->list = 0;
}

void
pigato__conns_file (pigato__conns_t *self, const pigato__conn_t *conn, int list,
                    pigato__conn_link_t *link)
{
    pigato__conns_unfile (self, link);
    slot_t *slot = s_slot (self, conn->fd, true);
    if (!slot || list < 0 || list > 1)
        return;
    link->fd = conn->fd;
    link->list = list;
    link->prev = NULL;
    link->next = slot->heads [list];
    if (link->next)
        link->next->prev = link;
    slot->heads [list] = link;
}

void
pigato__conns_unfile (pigato__conns_t *self, pigato__conn_link_t *link)
{
    if (link->fd < 0)
        return;
    slot_t *slot = s_slot (self, link->fd, false);
    if (link->prev)
        link->prev->next = link->next;
    else if (slot)
        slot->heads [link->list] = link->next;
    if (link->next)
        link->next->prev = link->prev;
    pigato__conn_link_init (link);
}

pigato__conn_link_t *
pigato__conns_filed (pigato__conns_t *self, int fd, int list)
{
    slot_t *slot = s_slot (self, fd, false);
    return slot && list >= 0 && list <= 1 ? slot->heads [list] : NULL;
}
