/*  =========================================================================
    mdp.h - Majordomo Protocol 0.2 (ZeroMQ RFC 18) and the Majordomo
    Management Interface (RFC 8), as the broker reads and writes them.

    MDP/0.2 peers share the broker's ROUTER with pigato peers and are told
    apart by the header frame: "MDPC02" (client) or "MDPW02" (worker). The
    decoder reads byte ranges (parts [0] = sender routing id, as received
    from the ROUTER) and borrows them: nothing is copied or allocated, and
    the result is valid while the parts live. Encoders fill arrays of byte
    ranges shaped for sending after a routing id; they point at static
    constants and at the caller's ranges, and allocate nothing.

    Decisions where RFC 18 leaves room (see also the contracts below):
    * A body is zero or more frames when decoding (RFC 18 counts "4 or
      more" / "5 or more" frames, but some implementations send an empty
      body as no frame at all); encoders always emit at least one body
      frame, an empty one for an empty body, so what we send has RFC 18's
      frame counts.
    * Service names are 1..PIGATO_SERVICE_MAX bytes with no control
      characters (RFC 18: "printable string"); bytes >= 0x80 are allowed
      (UTF-8). Client addresses are 1..PIGATO__MDP_CLIENT_MAX bytes (a
      ROUTER routing id) and otherwise opaque.
    * A message carries at most PIGATO__MDP_BODY_MAX body frames.
    =========================================================================
*/
#ifndef PIGATO_MDP_H_INCLUDED
#define PIGATO_MDP_H_INCLUDED

#include <stdint.h>
#include "codec.h"

#define PIGATO__MDP_CLIENT      "MDPC02"  //  MDP/Client v0.2 header
#define PIGATO__MDP_WORKER      "MDPW02"  //  MDP/Worker v0.2 header
#define PIGATO__MDP_HEADER_SIZE 6
#define PIGATO__MDP_CLIENT_MAX  255  //  client address, bytes
#define PIGATO__MDP_BODY_MAX    250  //  body frames per message
//  Frames an encoder writes at most (header, command, two fields, body)
#define PIGATO__MDP_ENCODE_MAX (4 + PIGATO__MDP_BODY_MAX)

//  MDP/Client commands (frame 1 of an MDPC02 message, one byte)
typedef enum {
    PIGATO__MDPC_REQUEST = 0x01,  //  client -> broker
    PIGATO__MDPC_PARTIAL = 0x02,  //  broker -> client
    PIGATO__MDPC_FINAL = 0x03     //  broker -> client
} pigato__mdpc_command_t;

//  MDP/Worker commands (frame 1 of an MDPW02 message, one byte)
typedef enum {
    PIGATO__MDPW_READY = 0x01,      //  worker -> broker
    PIGATO__MDPW_REQUEST = 0x02,    //  broker -> worker
    PIGATO__MDPW_PARTIAL = 0x03,    //  worker -> broker
    PIGATO__MDPW_FINAL = 0x04,      //  worker -> broker
    PIGATO__MDPW_HEARTBEAT = 0x05,  //  both ways
    PIGATO__MDPW_DISCONNECT = 0x06  //  both ways
} pigato__mdpw_command_t;

//  One MDP/0.2 message read by the broker. Fields a command does not carry
//  are {NULL, 0}; body_count is 0 for commands without a body.
typedef struct {
    char role;                //  'C' (MDPC02) or 'W' (MDPW02)
    int command;              //  the command byte (pigato__mdp?_command_t)
    int type;                 //  the pigato__type_t it routes as: READY,
                              //  REQUEST, PARTIAL, REPLY (FINAL),
                              //  HEARTBEAT, DISCONNECT
    pigato__bytes_t sender;   //  parts [0], the peer's routing id
    pigato__bytes_t service;  //  client REQUEST, worker READY
    pigato__bytes_t client;   //  worker PARTIAL/FINAL: client address
    size_t body_first;        //  index in parts of the first body frame
                              //  (== count when body_count is 0)
    size_t body_count;        //  body frames: parts [body_first ..
                              //  body_first + body_count)
} pigato__mdp_msg_t;

//  Tells whether a header frame is MDP/0.2: returns 'C' for "MDPC02", 'W'
//  for "MDPW02", 0 for anything else (then it is not an MDP message; other
//  MDP versions such as "MDPC01" are not MDP/0.2 and return 0).
char pigato__mdp_header (const pigato__bytes_t *header);

//  Decodes an MDP/0.2 message as received from the ROUTER: parts [0] is the
//  sender routing id, parts [1] the header, parts [2] the command byte.
//  Only what a broker may receive is valid:
//    client REQUEST     MDPC02, 0x01, service, body...
//    worker READY       MDPW02, 0x01, service               (exactly)
//    worker PARTIAL     MDPW02, 0x03, client, "", body...
//    worker FINAL       MDPW02, 0x04, client, "", body...
//    worker HEARTBEAT   MDPW02, 0x05                         (exactly)
//    worker DISCONNECT  MDPW02, 0x06                         (exactly)
//  Returns PIGATO__DECODE_OK and fills out, or a pigato__decode_t saying
//  why the message must be dropped (out is then partly filled, not to be
//  used): _SHORT a mandatory frame is missing; _HEADER parts [1] is not
//  MDPC02/MDPW02; _TYPE the command frame is not one byte, is unknown, or
//  is one the broker never receives (client PARTIAL/FINAL, worker
//  REQUEST); _FIELD empty or over-long service name or one with control
//  characters, empty or over-long client address, non-empty delimiter;
//  _FRAMES extra frames after READY/HEARTBEAT/DISCONNECT or more than
//  PIGATO__MDP_BODY_MAX body frames. A caller that read fewer parts than
//  the message had must drop it itself (the decoder sees only count).
int pigato__mdp_decode (const pigato__bytes_t *parts, size_t count,
                        pigato__mdp_msg_t *out) PIGATO__MUST_CHECK;

//  Broker -> MDP client reply: writes MDPC02, command, service, body...
//  into frames [] (no routing id: the frames that follow it) and returns
//  how many. command is PIGATO__MDPC_PARTIAL or PIGATO__MDPC_FINAL;
//  service is the service the client asked for; body holds body_count
//  frames (NULL when 0; an empty body is sent as one empty frame). Returns
//  0, writing nothing, if command is not a reply, body_count is over
//  PIGATO__MDP_BODY_MAX or capacity is too small (body_count + 3 frames,
//  at least 4, are needed; PIGATO__MDP_ENCODE_MAX always suffices).
size_t pigato__mdp_encode_client_reply (pigato__bytes_t *frames,
                                        size_t capacity, int command,
                                        const pigato__bytes_t *service,
                                        const pigato__bytes_t *body,
                                        size_t body_count);

//  Broker -> MDP worker REQUEST: writes MDPW02, 0x02, client, "", body...
//  into frames [] and returns how many. client is the address the worker
//  echoes in its PARTIAL/FINAL (the client's routing id); body as for
//  pigato__mdp_encode_client_reply. Returns 0, writing nothing, if the
//  client address is empty or over PIGATO__MDP_CLIENT_MAX, body_count is
//  over PIGATO__MDP_BODY_MAX or capacity is too small (body_count + 4
//  frames, at least 5).
size_t pigato__mdp_encode_worker_request (pigato__bytes_t *frames,
                                          size_t capacity,
                                          const pigato__bytes_t *client,
                                          const pigato__bytes_t *body,
                                          size_t body_count);

//  Broker -> MDP worker HEARTBEAT or DISCONNECT: writes MDPW02, command
//  into frames [] and returns 2; 0 if command is neither or capacity < 2.
size_t pigato__mdp_encode_worker_control (pigato__bytes_t *frames,
                                          size_t capacity, int command);

//  --------------------------------------------------------------------------
//  Packed body: the broker keeps an MDP client's body frames in one part
//  while the request waits, and restores them for the worker. Each frame
//  is [u32 big-endian size][bytes], frames in order, nothing else (no
//  count, no padding); no frames pack to no bytes.

#define PIGATO__MDP_PACKED_HEAD  4         //  size field per frame
#define PIGATO__MDP_PACK_INVALID SIZE_MAX  //  the frames cannot be packed

//  Bytes that count frames take packed: PIGATO__MDP_PACKED_HEAD plus the
//  frame's size, per frame. Returns PIGATO__MDP_PACK_INVALID if count is
//  over PIGATO__MDP_BODY_MAX; frames is NULL and count is not 0; a frame
//  is over UINT32_MAX bytes (the size field is 32 bits); a frame has NULL
//  data and a size that is not 0; the total would not fit a size_t.
size_t pigato__mdp_packed_size (const pigato__bytes_t *frames, size_t count);

//  Packs count frames into out, which holds out_size bytes, and returns
//  the bytes written (pigato__mdp_packed_size). Returns
//  PIGATO__MDP_PACK_INVALID, writing nothing, if pigato__mdp_packed_size
//  rejects the frames, out_size is below the packed size, or out is NULL
//  and the packed size is not 0.
size_t pigato__mdp_pack (byte *out, size_t out_size,
                         const pigato__bytes_t *frames, size_t count);

//  Reads packed frames into frames [] and returns how many. Borrows: the
//  frames point into packed's bytes (an empty frame too, with size 0) and
//  are valid while those live; nothing is copied or allocated. Never reads
//  outside packed, whatever its bytes. Reading stops, keeping the frames
//  read before, at: max frames read (the rest is left unread); fewer than
//  PIGATO__MDP_PACKED_HEAD bytes left (a cut size field); a size field
//  larger than the bytes that remain (a cut frame). packed NULL or with
//  NULL data, or frames NULL, reads no frames.
size_t pigato__mdp_unpack (const pigato__bytes_t *packed,
                           pigato__bytes_t *frames, size_t max);

//  Printable name of a command for logs ("REQUEST", "FINAL", ...);
//  "unknown" for a byte the role does not define. role is 'C' or 'W'.
const char *pigato__mdp_command_name (char role, int command);

//  --------------------------------------------------------------------------
//  MMI (RFC 8): the broker answers every service whose name starts with
//  "mmi." itself, and no worker may register one.

#define PIGATO__MMI_PREFIX          "mmi."
#define PIGATO__MMI_SERVICE         "mmi.service"
#define PIGATO__MMI_FOUND           "200"  //  the service has a worker
#define PIGATO__MMI_NOT_FOUND       "404"  //  it has none
#define PIGATO__MMI_NOT_IMPLEMENTED "501"  //  any other mmi.* name

//  True if a service name is in the MMI namespace (starts with "mmi.").
bool pigato__mmi_is (const pigato__bytes_t *service);


#endif
