/*  =========================================================================
    mdp.c - MDP/0.2 (RFC 18) <-> pigato__mdp_msg_t, the packed body of an
    MDP client's request, and MMI (RFC 8) names.

    The decoder checks every count and size a peer controls and never
    trusts a frame to exist; the encoders only arrange byte ranges.
    =========================================================================
*/
#include <stdint.h>
#include <string.h>
#include "mdp.h"

//  Command bytes and the empty frame the encoders point at
static const byte s_commands [] = { 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06 };
static const byte s_empty [1] = { 0 };

static pigato__bytes_t
s_literal (const char *text)
{
    return (pigato__bytes_t) { (const byte *) text, strlen (text) };
}

static pigato__bytes_t
s_command (int command)
{
    return (pigato__bytes_t) { &s_commands [command], 1 };
}

static bool
s_is (const pigato__bytes_t *bytes, const char *text, size_t length)
{
    return bytes->size == length && memcmp (bytes->data, text, length) == 0;
}

//  A service name: 1..PIGATO_SERVICE_MAX bytes, none of them a control
//  character (RFC 18 calls it a printable string; UTF-8 is allowed).
static bool
s_service_valid (const byte *data, size_t size)
{
    if (size == 0 || size > PIGATO_SERVICE_MAX)
        return false;
    for (size_t index = 0; index < size; index++)
        if (data [index] < 0x20 || data [index] == 0x7f)
            return false;
    return true;
}

char
pigato__mdp_header (const pigato__bytes_t *header)
{
    if (s_is (header, PIGATO__MDP_CLIENT, PIGATO__MDP_HEADER_SIZE))
        return 'C';
    if (s_is (header, PIGATO__MDP_WORKER, PIGATO__MDP_HEADER_SIZE))
        return 'W';
    return 0;
}

//  Sets the body range to parts [first .. count), at most BODY_MAX frames.
static int
s_body (pigato__mdp_msg_t *out, size_t first, size_t count)
{
    out->body_first = first;
    out->body_count = count - first;
    if (out->body_count > PIGATO__MDP_BODY_MAX)
        return PIGATO__DECODE_FRAMES;
    return PIGATO__DECODE_OK;
}

static int
s_decode_client (const pigato__bytes_t *parts, size_t count,
                 pigato__mdp_msg_t *out)
{
    if (out->command != PIGATO__MDPC_REQUEST)
        return PIGATO__DECODE_TYPE;  //  PARTIAL/FINAL go to clients
    out->type = PIGATO__REQUEST;
    if (count < 4)
        return PIGATO__DECODE_SHORT;
    out->service = parts [3];
    if (!s_service_valid (parts [3].data, parts [3].size))
        return PIGATO__DECODE_FIELD;
    return s_body (out, 4, count);
}

static int
s_decode_worker (const pigato__bytes_t *parts, size_t count,
                 pigato__mdp_msg_t *out)
{
    switch (out->command) {
        case PIGATO__MDPW_READY:  //  service
            out->type = PIGATO__READY;
            if (count < 4)
                return PIGATO__DECODE_SHORT;
            if (count > 4)
                return PIGATO__DECODE_FRAMES;
            out->service = parts [3];
            if (!s_service_valid (parts [3].data, parts [3].size))
                return PIGATO__DECODE_FIELD;
            break;
        case PIGATO__MDPW_PARTIAL:  //  client, "", body...
        case PIGATO__MDPW_FINAL:
            out->type = out->command == PIGATO__MDPW_FINAL ? PIGATO__REPLY
                                                           : PIGATO__PARTIAL;
            if (count < 4)
                return PIGATO__DECODE_SHORT;
            out->client = parts [3];
            if (out->client.size == 0
                || out->client.size > PIGATO__MDP_CLIENT_MAX)
                return PIGATO__DECODE_FIELD;
            if (count < 5)
                return PIGATO__DECODE_SHORT;
            if (parts [4].size != 0)
                return PIGATO__DECODE_FIELD;  //  not the empty delimiter
            return s_body (out, 5, count);
        case PIGATO__MDPW_HEARTBEAT:
        case PIGATO__MDPW_DISCONNECT:
            out->type = out->command == PIGATO__MDPW_HEARTBEAT
                          ? PIGATO__HEARTBEAT
                          : PIGATO__DISCONNECT;
            if (count > 3)
                return PIGATO__DECODE_FRAMES;
            break;
        default:  //  REQUEST goes to workers
            return PIGATO__DECODE_TYPE;
    }
    out->body_first = count;
    return PIGATO__DECODE_OK;
}

int
pigato__mdp_decode (const pigato__bytes_t *parts, size_t count,
                    pigato__mdp_msg_t *out)
{
    memset (out, 0, sizeof *out);
    if (count < 2)
        return PIGATO__DECODE_SHORT;
    out->sender = parts [0];
    out->body_first = count;
    out->role = pigato__mdp_header (&parts [1]);
    if (!out->role)
        return PIGATO__DECODE_HEADER;
    if (count < 3)
        return PIGATO__DECODE_SHORT;
    if (parts [2].size != 1)
        return PIGATO__DECODE_TYPE;
    out->command = parts [2].data [0];
    if (out->role == 'C')
        return s_decode_client (parts, count, out);
    return s_decode_worker (parts, count, out);
}

//  Appends body frames after `used` frames; an empty body is one empty
//  frame. Returns the new count.
static size_t
s_put_body (pigato__bytes_t *frames, size_t used, const pigato__bytes_t *body,
            size_t body_count)
{
    if (body_count == 0) {
        frames [used++] = (pigato__bytes_t) { s_empty, 0 };
        return used;
    }
    memcpy (frames + used, body, body_count * sizeof *body);
    return used + body_count;
}

static size_t
s_body_frames (size_t body_count)
{
    return body_count ? body_count : 1;
}

size_t
pigato__mdp_encode_client_reply (pigato__bytes_t *frames, size_t capacity,
                                 int command, const pigato__bytes_t *service,
                                 const pigato__bytes_t *body, size_t body_count)
{
    if ((command != PIGATO__MDPC_PARTIAL && command != PIGATO__MDPC_FINAL)
        || body_count > PIGATO__MDP_BODY_MAX || (body_count && !body)
        || capacity < 3 + s_body_frames (body_count))
        return 0;
    frames [0] = s_literal (PIGATO__MDP_CLIENT);
    frames [1] = s_command (command);
    frames [2] = service ? *service : (pigato__bytes_t) { s_empty, 0 };
    return s_put_body (frames, 3, body, body_count);
}

size_t
pigato__mdp_encode_worker_request (pigato__bytes_t *frames, size_t capacity,
                                   const pigato__bytes_t *client,
                                   const pigato__bytes_t *body,
                                   size_t body_count)
{
    if (!client || client->size == 0 || client->size > PIGATO__MDP_CLIENT_MAX
        || body_count > PIGATO__MDP_BODY_MAX || (body_count && !body)
        || capacity < 4 + s_body_frames (body_count))
        return 0;
    frames [0] = s_literal (PIGATO__MDP_WORKER);
    frames [1] = s_command (PIGATO__MDPW_REQUEST);
    frames [2] = *client;
    frames [3] = (pigato__bytes_t) { s_empty, 0 };
    return s_put_body (frames, 4, body, body_count);
}

size_t
pigato__mdp_encode_worker_control (pigato__bytes_t *frames, size_t capacity,
                                   int command)
{
    if ((command != PIGATO__MDPW_HEARTBEAT
         && command != PIGATO__MDPW_DISCONNECT)
        || capacity < 2)
        return 0;
    frames [0] = s_literal (PIGATO__MDP_WORKER);
    frames [1] = s_command (command);
    return 2;
}

//  --------------------------------------------------------------------------
//  A packed frame's size field: 32 bits, big-endian.

static void
s_packed_size_put (byte *at, size_t size)
{
    at [0] = (byte) (size >> 24);
    at [1] = (byte) (size >> 16);
    at [2] = (byte) (size >> 8);
    at [3] = (byte) size;
}

static size_t
s_packed_size_get (const byte *at)
{
    return ((size_t) at [0] << 24) | ((size_t) at [1] << 16)
         | ((size_t) at [2] << 8) | (size_t) at [3];
}

size_t
pigato__mdp_packed_size (const pigato__bytes_t *frames, size_t count)
{
    if (count > PIGATO__MDP_BODY_MAX || (count && !frames))
        return PIGATO__MDP_PACK_INVALID;
    //  Totals stay below PIGATO__MDP_PACK_INVALID, which means "invalid"
    const size_t limit = PIGATO__MDP_PACK_INVALID - 1;
    size_t total = 0;
    for (size_t index = 0; index < count; index++) {
        size_t size = frames [index].size;
        if (size > UINT32_MAX || (size && !frames [index].data)
            || total > limit - PIGATO__MDP_PACKED_HEAD
            || size > limit - PIGATO__MDP_PACKED_HEAD - total)
            return PIGATO__MDP_PACK_INVALID;
        total += PIGATO__MDP_PACKED_HEAD + size;
    }
    return total;
}

size_t
pigato__mdp_pack (byte *out, size_t out_size, const pigato__bytes_t *frames,
                  size_t count)
{
    size_t total = pigato__mdp_packed_size (frames, count);
    if (total == PIGATO__MDP_PACK_INVALID || total > out_size
        || (total && !out))
        return PIGATO__MDP_PACK_INVALID;
    size_t offset = 0;
    for (size_t index = 0; index < count; index++) {
        size_t size = frames [index].size;
        s_packed_size_put (out + offset, size);
        offset += PIGATO__MDP_PACKED_HEAD;
        if (size)
            memcpy (out + offset, frames [index].data, size);
        offset += size;
    }
    return total;
}

//  Offsets, not pointers: no arithmetic on a NULL or cut range.
size_t
pigato__mdp_unpack (const pigato__bytes_t *packed, pigato__bytes_t *frames,
                    size_t max)
{
    if (!packed || !packed->data || !frames)
        return 0;
    size_t count = 0;
    size_t offset = 0;
    while (count < max && packed->size - offset >= PIGATO__MDP_PACKED_HEAD) {
        size_t size = s_packed_size_get (packed->data + offset);
        offset += PIGATO__MDP_PACKED_HEAD;
        if (size > packed->size - offset)
            break;
        frames [count].data = packed->data + offset;
        frames [count++].size = size;
        offset += size;
    }
    return count;
}

const char *
pigato__mdp_command_name (char role, int command)
{
    static const char *client_names [] = { NULL, "REQUEST", "PARTIAL",
                                           "FINAL" };
    static const char *worker_names [] = { NULL,        "READY", "REQUEST",
                                           "PARTIAL",   "FINAL", "HEARTBEAT",
                                           "DISCONNECT" };
    if (role == 'C' && command >= 1 && command <= 3)
        return client_names [command];
    if (role == 'W' && command >= 1 && command <= 6)
        return worker_names [command];
    return "unknown";
}

bool
pigato__mmi_is (const pigato__bytes_t *service)
{
    size_t length = strlen (PIGATO__MMI_PREFIX);
    return service->size >= length
        && memcmp (service->data, PIGATO__MMI_PREFIX, length) == 0;
}
