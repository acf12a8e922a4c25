'use strict';
// The Node baseline for make bench: pigato 0.0.46's own Broker, on the zmq
// shim that tests/node/setup.sh installs (NODE_PATH=BUILD/node/node_modules).
//   node bench/node_broker.js --bind EP --intch EP [--secret-key Z85]
// --intch is the broker's internal PUB endpoint (pigato binds one; give a
// free port). With --secret-key the ROUTER is a CURVE server with that key
// (pigato 0.0.46 has no option for it: the socket factory is wrapped before
// the Broker makes its sockets). Prints event=ready on stderr once bound;
// stops on SIGINT or SIGTERM.

const zmq = require('zmq');
const pigato = require('pigato');

const args = {};
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
if (!args.bind || !args.intch) {
  console.error('usage: node_broker.js --bind EP --intch EP [--secret-key Z85]');
  process.exit(64);
}

if (args['secret-key']) {
  const socket = zmq.socket;
  zmq.socket = zmq.createSocket = function(type, options) {
    const sock = socket(type, options);
    if (type === 'router') {
      sock.setsockopt('curve_server', 1);
      sock.setsockopt('curve_secretkey', args['secret-key']);
    }
    return sock;
  };
}

const broker = new pigato.Broker(args.bind, { intch: args.intch });
broker.on('start', function() {
  console.error('event=ready broker=' + args.bind + ' curve=' + !!args['secret-key']);
});
broker.start();

function stop() {
  broker.stop();
  setTimeout(function() { process.exit(0); }, 300);
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
