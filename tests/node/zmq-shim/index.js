'use strict';
// The `zmq` 2.x API that pigato 0.0.46 requires, on zeromq@6's v5-compat
// layer (zmq 2.x no longer builds on current Node). Differences papered over:
//  * frames: zmq 2.x sent String(x) for anything that is not a Buffer
//    (pigato sends numbers, and `undefined` -> the text "undefined");
//  * socket._zmq.state and zmq.STATE_CLOSED, which pigato reads on stop;
//  * `identity` on ROUTER and PUB sockets (v6 rejects it there; DEALER,
//    REQ and REP sockets keep theirs);
//  * CURVE: pigato has no option for it, so every DEALER gets the broker's
//    key from PIGATO_NODE_SERVER_KEY (Z85) and its own key pair from
//    PIGATO_NODE_PUBLIC_KEY / PIGATO_NODE_SECRET_KEY, or an ephemeral pair.

const compat = require('zeromq/v5-compat');

const STATE_READY = compat.STATE_READY !== undefined ? compat.STATE_READY : 0;
const STATE_CLOSED = compat.STATE_CLOSED !== undefined ? compat.STATE_CLOSED : 2;

function toFrame(x) {
  if (Buffer.isBuffer(x)) {
    return x;
  }
  return Buffer.from(String(x), 'utf8');
}

function applyCurve(sock) {
  const serverKey = process.env.PIGATO_NODE_SERVER_KEY;
  if (!serverKey) {
    return;
  }
  let publicKey = process.env.PIGATO_NODE_PUBLIC_KEY;
  let secretKey = process.env.PIGATO_NODE_SECRET_KEY;
  if (!publicKey || !secretKey) {
    const pair = compat.curveKeypair();
    publicKey = pair.public;
    secretKey = pair.secret;
  }
  sock.setsockopt('curve_serverkey', serverKey);
  sock.setsockopt('curve_publickey', publicKey);
  sock.setsockopt('curve_secretkey', secretKey);
}

function socket(type, options) {
  const sock = compat.socket(type);
  // zeromq@6 has a routing id only on these; pigato also names its ROUTER
  // and PUB sockets, which v6 rejects: ignore it there.
  const isRouter = ['dealer', 'xreq', 'req', 'rep'].indexOf(type) === -1;

  const setsockopt = sock.setsockopt.bind(sock);
  sock.setsockopt = function(option, value) {
    if (isRouter && (option === 'identity' || option === compat.ZMQ_IDENTITY)) {
      return sock;
    }
    return setsockopt(option, value);
  };

  Object.defineProperty(sock, 'identity', {
    configurable: true,
    get() {
      return isRouter ? undefined : sock.getsockopt('identity');
    },
    set(value) {
      if (!isRouter) {
        setsockopt('identity', typeof value === 'string' ? Buffer.from(value) : value);
      }
    }
  });

  Object.defineProperty(sock, '_zmq', {
    configurable: true,
    get() {
      return { state: sock.closed ? STATE_CLOSED : STATE_READY };
    }
  });

  const send = sock.send.bind(sock);
  sock.send = function(msg, flags, cb) {
    return send(Array.isArray(msg) ? msg.map(toFrame) : toFrame(msg), flags, cb);
  };

  const close = sock.close.bind(sock);
  sock.close = function() {
    if (!sock.closed) {
      close();
    }
    return sock;
  };

  if (type === 'dealer' || type === 'xreq') {
    applyCurve(sock);
  }

  for (const key in options || {}) {
    if (Object.prototype.hasOwnProperty.call(options, key)) {
      sock[key] = options[key];
    }
  }
  return sock;
}

module.exports = Object.assign({}, compat, {
  socket: socket,
  createSocket: socket,
  STATE_READY: STATE_READY,
  STATE_CLOSED: STATE_CLOSED
});
