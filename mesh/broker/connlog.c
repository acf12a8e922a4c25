/*  =========================================================================
    connlog.c - connections in the broker's log, at info:

        event=connection_open address=127.0.0.1:50412 identity=web
            key=3f9c0a1b2c3d4e5f fd=12
        event=connection_closed address=127.0.0.1:50412 identity=web
            key=3f9c0a1b2c3d4e5f fd=12 seconds=12.250 bytes_in=1480
            bytes_out=2210

    A connection is logged open when its first message arrives: its
    handshake is done then, so its identity and key are known (a refused
    handshake is event=zap_deny, a connection over the maximum
    event=connection_refused, both rate-limited). The closing line repeats
    what the opening one said, so either can be found from the other.
    Opening lines are rate-limited (a peer with a valid key reconnecting in
    a loop must not bury the log); a connection whose opening line was held
    back gets no closing line either, so every closed has its open.
    =========================================================================
*/
#include <inttypes.h>
#include "broker_internal.h"

#define OPEN_LINES_PER_SECOND 100  //  then event=connection_open_suppressed

//  What a connection's closing line needs: kept in its slot (log_note).
typedef struct {
    int64_t opened_ms;  //  when its first message came
    char text [];       //  "address=... identity=... key=... fd=N"
} note_t;

//  --------------------------------------------------------------------------
//  The first message of a connection is in self->input: logs the
//  connection open (its identity and key from the message's metadata, the
//  address from the socket) and keeps the line's fields for its close.

void
pigato__connlog_open (pigato_broker_t *self, int fd, pigato__conn_slot_t *slot)
{
    if (pigato__log_level < PIGATO_LOG_INFO || slot->log_note)
        return;
    self->conn_log.limit = OPEN_LINES_PER_SECOND;
    if (!pigato__ratelimit_allow_at (&self->conn_log, "connection_open",
                                     PIGATO_LOG_INFO))
        return;
    const char *identity = NULL, *key = NULL;
    if (self->input.count > 1) {
        identity = zmq_msg_gets (&self->input.parts [1], "User-Id");
        key = zmq_msg_gets (&self->input.parts [1], PIGATO__KEY_PROPERTY);
    }
    char address [INET6_ADDRSTRLEN + 8], identity_text [4 * 64 + 4];
    char fingerprint [PIGATO_FINGERPRINT_SIZE] = "-";
    pigato__fd_peer (fd, address, sizeof address);
    pigato__printable (identity ? identity : "-",
                       identity ? strlen (identity) : 1, identity_text,
                       sizeof identity_text);
    if (key && strlen (key) == PIGATO_Z85_KEY_SIZE)
        pigato_key_fingerprint (key, fingerprint);
    char text [512];
    int size = snprintf (text, sizeof text,
                         "address=%s identity=%s key=%s fd=%d", address,
                         identity_text, fingerprint, fd);
    if (size < 0 || (size_t) size >= sizeof text)
        return;
    note_t *note = (note_t *) malloc (sizeof (note_t) + (size_t) size + 1);
    if (note) {
        note->opened_ms = self->core->now_ms;
        memcpy (note->text, text, (size_t) size + 1);
        slot->log_note = note;
    }
    pigato__log (PIGATO_LOG_INFO, "event=connection_open %s", text);
}

//  --------------------------------------------------------------------------
//  The connection on fd ends (before the conns table forgets it): logs
//  its close if its open was logged.

void
pigato__connlog_closed (pigato_broker_t *self, int fd)
{
    pigato__conn_t conn;
    if (pigato__conns_lookup (self->core->conns, fd, &conn)
        != PIGATO__CONN_OPEN)
        return;
    pigato__conn_slot_t *slot = pigato__conns_slot (self->core->conns, &conn);
    if (!slot || !slot->log_note)
        return;
    note_t *note = (note_t *) slot->log_note;
    int64_t lasted = self->core->now_ms - note->opened_ms;
    pigato__log (PIGATO_LOG_INFO,
                 "event=connection_closed %s seconds=%" PRId64 ".%03d "
                 "bytes_in=%" PRIu64 " bytes_out=%" PRIu64,
                 note->text, lasted / 1000, (int) (lasted % 1000),
                 slot->bytes_in, slot->bytes_out);
    free (note);
    slot->log_note = NULL;
}

//  From the heartbeat: the count of opening lines held back, once their
//  second is over.
void
pigato__connlog_tick (pigato_broker_t *self)
{
    pigato__ratelimit_flush (&self->conn_log, "connection_open",
                             PIGATO_LOG_INFO);
}
