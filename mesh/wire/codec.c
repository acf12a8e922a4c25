/*  =========================================================================
    codec.c - pigato 0.0.46 framing <-> pigato__msg_t.

    Decoders borrow frames from the zmsg (no copies, no allocation) and
    check every count and size a peer controls; they never trust a frame
    to exist.
    =========================================================================
*/
#include <string.h>
#include "native.h"

#define MAX_FRAMES 12  //  longest valid message is 9 frames + id

//  A message's frames, by index.
typedef struct {
    pigato__bytes_t frames [MAX_FRAMES];  //  borrowed
    size_t count;                         //  frames in the message
} frames_t;

static int
s_frames_load (zmsg_t *msg, frames_t *frames)
{
    size_t count = zmsg_size (msg);
    if (count > MAX_FRAMES)
        return PIGATO__DECODE_FRAMES;
    frames->count = 0;
    for (zframe_t *frame = zmsg_first (msg); frame; frame = zmsg_next (msg)) {
        frames->frames [frames->count].data = zframe_data (frame);
        frames->frames [frames->count++].size = zframe_size (frame);
    }
    return PIGATO__DECODE_OK;
}

static void
s_bytes (const frames_t *frames, size_t index, pigato__bytes_t *bytes)
{
    if (index < frames->count)
        *bytes = frames->frames [index];
    else {
        bytes->data = NULL;
        bytes->size = 0;
    }
}

static bool
s_is (const pigato__bytes_t *bytes, const char *text)
{
    size_t length = strlen (text);
    return bytes->size == length && memcmp (bytes->data, text, length) == 0;
}

//  Parses the status frame: "0", "-1", or empty/missing = 0. Node pigato
//  also sends numbers as text; anything else is malformed.
static int
s_parse_status (const pigato__bytes_t *bytes, int *status)
{
    if (bytes->size == 0 || s_is (bytes, "0")) {
        *status = 0;
        return 0;
    }
    if (s_is (bytes, "-1")) {
        *status = -1;
        return 0;
    }
    return -1;
}

static bool
s_opts_present (const pigato__bytes_t *opts)
{
    return opts->size > 0 && !s_is (opts, "{}") && !s_is (opts, "undefined")
        && !s_is (opts, "null");
}

//  Decodes header, type and body frames starting at `first` (0 from a
//  DEALER, 1 from a ROUTER). `from_peer` selects which direction's
//  messages are valid.
static int
s_decode (const frames_t *frames, size_t first, bool from_peer,
          pigato__msg_t *out)
{
    if (frames->count < first + 2)
        return PIGATO__DECODE_SHORT;
    pigato__bytes_t header, type;
    s_bytes (frames, first, &header);
    s_bytes (frames, first + 1, &type);
    if (s_is (&header, "C"))
        out->role = 'C';
    else if (s_is (&header, "W"))
        out->role = 'W';
    else
        return PIGATO__DECODE_HEADER;
    if (type.size != 1 || type.data [0] < '1' || type.data [0] > '7')
        return PIGATO__DECODE_TYPE;
    out->type = type.data [0] - '0';

    size_t body = first + 2;  //  first frame after type
    size_t body_frames = frames->count - body;
    if (out->role == 'C' && from_peer) {
        switch (out->type) {
            case PIGATO__REQUEST:  //  service, rid, data, opts
                if (body_frames < 2)
                    return PIGATO__DECODE_SHORT;
                if (body_frames > 4)
                    return PIGATO__DECODE_FRAMES;
                s_bytes (frames, body, &out->service);
                s_bytes (frames, body + 1, &out->rid);
                s_bytes (frames, body + 2, &out->data);
                s_bytes (frames, body + 3, &out->opts);
                break;
            case PIGATO__HEARTBEAT:  //  [ "request"|"req", rid ]
                if (body_frames == 0)
                    break;
                if (body_frames == 1) {  //  [ offer ]: native framing
                    pigato__bytes_t offer;
                    s_bytes (frames, body, &offer);
                    if (!s_is (&offer, PIGATO__NATIVE_OFFER))
                        return PIGATO__DECODE_FIELD;
                    out->native_offer = true;
                    break;
                }
                if (body_frames != 2)
                    return PIGATO__DECODE_FRAMES;
                {
                    pigato__bytes_t kind;
                    s_bytes (frames, body, &kind);
                    if (!s_is (&kind, "request") && !s_is (&kind, "req"))
                        return PIGATO__DECODE_FIELD;
                }
                out->request_heartbeat = true;
                s_bytes (frames, body + 1, &out->rid);
                break;
            case PIGATO__DISCONNECT: break;
            default: return PIGATO__DECODE_TYPE;
        }
    }
    else if (out->role == 'W' && from_peer) {
        switch (out->type) {
            case PIGATO__READY:  //  service [, offer ]
                if (body_frames < 1)
                    return PIGATO__DECODE_SHORT;
                if (body_frames > 2)
                    return PIGATO__DECODE_FRAMES;
                s_bytes (frames, body, &out->service);
                if (body_frames == 2) {
                    pigato__bytes_t offer;
                    s_bytes (frames, body + 1, &offer);
                    if (!s_is (&offer, PIGATO__NATIVE_OFFER))
                        return PIGATO__DECODE_FIELD;
                    out->native_offer = true;
                }
                break;
            case PIGATO__HEARTBEAT:  //  [ "", opts ]
                if (body_frames > 2)
                    return PIGATO__DECODE_FRAMES;
                s_bytes (frames, body + 1, &out->opts);
                break;
            case PIGATO__REPLY:  //  client, "", rid, status, data, opts
            case PIGATO__PARTIAL:
            case PIGATO__REJECT: {
                if (body_frames < 3)
                    return PIGATO__DECODE_SHORT;
                if (body_frames > 6)
                    return PIGATO__DECODE_FRAMES;
                pigato__bytes_t status;
                s_bytes (frames, body, &out->client);
                s_bytes (frames, body + 2, &out->rid);
                s_bytes (frames, body + 3, &status);
                s_bytes (frames, body + 4, &out->data);
                s_bytes (frames, body + 5, &out->opts);
                if (s_parse_status (&status, &out->status))
                    return PIGATO__DECODE_FIELD;
                break;
            }
            case PIGATO__DISCONNECT: break;
            default: return PIGATO__DECODE_TYPE;
        }
    }
    else if (out->role == 'C') {  //  broker -> client
        switch (out->type) {
            case PIGATO__HEARTBEAT:  //  [ PIGATO__DRAIN_NOTICE ]
                //  Frames after the type are read leniently: a later
                //  broker may say more
                s_bytes (frames, body, &out->data);
                break;
            case PIGATO__REPLY:  //  "", rid, status, data, opts
            case PIGATO__PARTIAL: {
                if (body_frames < 2)
                    return PIGATO__DECODE_SHORT;
                if (body_frames > 5)
                    return PIGATO__DECODE_FRAMES;
                pigato__bytes_t status;
                s_bytes (frames, body + 1, &out->rid);
                s_bytes (frames, body + 2, &status);
                s_bytes (frames, body + 3, &out->data);
                s_bytes (frames, body + 4, &out->opts);
                if (s_parse_status (&status, &out->status))
                    return PIGATO__DECODE_FIELD;
                break;
            }
            default: return PIGATO__DECODE_TYPE;
        }
    }
    else {  //  broker -> worker
        switch (out->type) {
            case PIGATO__READY: break;
            case PIGATO__DISCONNECT:  //  [ reason ] (pigato-broker)
                if (body_frames > 0)
                    s_bytes (frames, body, &out->data);
                break;
            case PIGATO__HEARTBEAT:  //  [ client, "", rid ]
                if (body_frames == 0)
                    break;
                if (body_frames != 3)
                    return PIGATO__DECODE_FRAMES;
                out->request_heartbeat = true;
                s_bytes (frames, body, &out->client);
                s_bytes (frames, body + 2, &out->rid);
                break;
            case PIGATO__REQUEST:  //  client, service, "", rid, data, opts
                if (body_frames < 4)
                    return PIGATO__DECODE_SHORT;
                if (body_frames > 6)
                    return PIGATO__DECODE_FRAMES;
                s_bytes (frames, body, &out->client);
                s_bytes (frames, body + 1, &out->service);
                s_bytes (frames, body + 3, &out->rid);
                s_bytes (frames, body + 4, &out->data);
                s_bytes (frames, body + 5, &out->opts);
                break;
            default: return PIGATO__DECODE_TYPE;
        }
    }
    int rc = pigato__msg_validate (out, from_peer);
    if (rc)
        return rc;
    out->has_opts = s_opts_present (&out->opts);
    return PIGATO__DECODE_OK;
}

int
pigato__decode_from_peer (zmsg_t *msg, pigato__msg_t *out)
{
    memset (out, 0, sizeof *out);
    frames_t frames;
    int rc = s_frames_load (msg, &frames);
    if (rc)
        return rc;
    if (frames.count < 1)
        return PIGATO__DECODE_SHORT;
    s_bytes (&frames, 0, &out->sender);
    return s_decode (&frames, 1, true, out);
}

int
pigato__decode_from_broker (zmsg_t *msg, pigato__msg_t *out)
{
    memset (out, 0, sizeof *out);
    frames_t frames;
    int rc = s_frames_load (msg, &frames);
    if (rc)
        return rc;
    return s_decode (&frames, 0, false, out);
}

int
pigato__decode_046 (const pigato__bytes_t *parts, size_t count,
                    pigato__msg_t *out)
{
    memset (out, 0, sizeof *out);
    if (count > MAX_FRAMES)
        return PIGATO__DECODE_FRAMES;
    if (count < 1)
        return PIGATO__DECODE_SHORT;
    frames_t frames;
    memcpy (frames.frames, parts, count * sizeof *parts);
    frames.count = count;
    out->sender = parts [0];
    return s_decode (&frames, 1, true, out);
}

const char *
pigato__decode_reason (int code)
{
    switch (code) {
        case PIGATO__DECODE_OK: return "ok";
        case PIGATO__DECODE_SHORT: return "short";
        case PIGATO__DECODE_HEADER: return "header";
        case PIGATO__DECODE_TYPE: return "type";
        case PIGATO__DECODE_FIELD: return "field";
        case PIGATO__DECODE_FRAMES: return "frames";
        default: return "unknown";
    }
}

static void
s_add (zmsg_t *msg, const pigato__bytes_t *bytes)
{
    zmsg_addmem (msg, bytes ? bytes->data : NULL, bytes ? bytes->size : 0);
}

zmsg_t *
pigato__encode_client_reply (const pigato__bytes_t *to, int type,
                             const pigato__bytes_t *rid, int status,
                             const pigato__bytes_t *data,
                             const pigato__bytes_t *opts)
{
    zmsg_t *msg = zmsg_new ();
    if (to)
        s_add (msg, to);
    zmsg_addstr (msg, "C");
    char type_text [2] = { (char) ('0' + type), 0 };
    zmsg_addstr (msg, type_text);
    zmsg_addmem (msg, NULL, 0);
    s_add (msg, rid);
    zmsg_addstr (msg, status ? "-1" : "0");
    s_add (msg, data);
    if (opts && opts->size)
        s_add (msg, opts);
    else
        zmsg_addstr (msg, "{}");
    return msg;
}
