/*  =========================================================================
    codec.h - frame codecs: pigato 0.0.46 framing to one message struct.

    Decoding borrows the frames of the zmsg it was given: the struct is valid
    while that zmsg lives. Nothing is copied, nothing is allocated.
    =========================================================================
*/
#ifndef PIGATO_CODEC_H_INCLUDED
#define PIGATO_CODEC_H_INCLUDED

#include "../base/internal.h"
#include "../base/conns.h"

//  Message types: the ASCII digit of pigato's type frame.
typedef enum {
    PIGATO__READY = 1,
    PIGATO__REQUEST = 2,
    PIGATO__REPLY = 3,  //  final reply
    PIGATO__HEARTBEAT = 4,
    PIGATO__DISCONNECT = 5,
    PIGATO__PARTIAL = 6,
    PIGATO__REJECT = 7
} pigato__type_t;

//  The one framing enum. A client's or worker's choice
//  (pigato_*_set_framing) is AUTO, NATIVE or 046; what a peer speaks on
//  the wire (the broker's record of a worker or a request) is 046, NATIVE
//  or MDP.
typedef enum {
    PIGATO__FRAMING_AUTO = 0,    //  0.0.46 + offer; native once answered
    PIGATO__FRAMING_NATIVE = 1,  //  native (docs/native-framing.md)
    PIGATO__FRAMING_046 = 2,     //  pigato 0.0.46, never offering
    PIGATO__FRAMING_MDP = 3      //  MDP/0.2 (ZeroMQ RFC 18)
} pigato__framing_t;

typedef struct {
    const byte *data;
    size_t size;
} pigato__bytes_t;

//  Opts (a JSON object) are small: at most this many bytes in every
//  framing (native's field holds no more). The broker parses opts, so
//  larger ones would let one message cost it a parse of up to 16 MiB and
//  many times that in JSON values; it refuses them.
#define PIGATO__OPTS_MAX PIGATO_OPTS_MAX

//  A byte range over NUL-terminated text (not copied, the NUL left out):
//  S_TEXT as an initializer, BYTES as a value.
#define S_TEXT(text)                                                           \
    {                                                                          \
        (const byte *) (text), strlen (text)                                   \
    }
#define BYTES(text) ((pigato__bytes_t) S_TEXT (text))

//  The drain notice, broker -> client: `C`, `4`, this word (a heartbeat
//  with one more frame, which older peers ignore): the broker takes no
//  new requests (docs/protocol.md, "Drain").
#define PIGATO__DRAIN_NOTICE "draining"

//  One decoded message. Fields a message type does not carry are
//  {NULL, 0}. `present` tells an empty frame from a missing one.
typedef struct {
    char role;                //  'C' client side, 'W' worker side
    int type;                 //  pigato__type_t
    pigato__bytes_t sender;   //  routing id (messages read from a ROUTER)
    pigato__bytes_t service;  //  REQUEST, READY
    pigato__bytes_t client;   //  client routing id (worker-side messages)
    pigato__bytes_t rid;      //  request id
    pigato__bytes_t data;     //  body (REQUEST, REPLY, PARTIAL, REJECT
                              //  reason; broker -> client HEARTBEAT: the
                              //  frame after the type, a drain notice)
    pigato__bytes_t opts;     //  JSON opts (REQUEST, replies, W heartbeat)
    int status;               //  0 or -1 (replies)
    bool request_heartbeat;   //  C/W HEARTBEAT naming a rid
    bool has_opts;        //  opts frame present and not "{}"/empty/undefined
    bool native;          //  came in the native framing (native.h)
    bool native_offer;    //  0.0.46 C 4 / W 1 offering native framing
    pigato__conn_t conn;  //  the connection it came from (broker)
} pigato__msg_t;

//  Decode errors (why a message was dropped); also the counters' names.
typedef enum {
    PIGATO__DECODE_OK = 0,
    PIGATO__DECODE_SHORT,   //  too few frames for its type
    PIGATO__DECODE_HEADER,  //  unknown header frame
    PIGATO__DECODE_TYPE,    //  unknown or misplaced type
    PIGATO__DECODE_FIELD,   //  a field is too long or malformed
    PIGATO__DECODE_FRAMES   //  too many frames
} pigato__decode_t;

//  Decodes a message read from the broker's ROUTER (frame 0 = sender).
int pigato__decode_from_peer (zmsg_t *msg,
                              pigato__msg_t *out) PIGATO__MUST_CHECK;

//  The same from byte ranges (parts [0] = sender): how the broker decodes
//  the parts it received as zmq_msg_t.
int pigato__decode_046 (const pigato__bytes_t *parts, size_t count,
                        pigato__msg_t *out) PIGATO__MUST_CHECK;

//  Decodes a message a client or worker read from its DEALER.
int pigato__decode_from_broker (zmsg_t *msg,
                                pigato__msg_t *out) PIGATO__MUST_CHECK;

//  Short name of a decode error, for logs and counters.
const char *pigato__decode_reason (int code);

//  Encoders append frames to a new zmsg (caller sends / destroys).
//  Routing-id frame first when to_router is not NULL.

//  broker -> client: C, 6|3, "", rid, status, data, opts
zmsg_t *pigato__encode_client_reply (const pigato__bytes_t *to, int type,
                                     const pigato__bytes_t *rid, int status,
                                     const pigato__bytes_t *data,
                                     const pigato__bytes_t *opts);

#endif
