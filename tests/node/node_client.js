'use strict';
// A Node pigato 0.0.46 Client for interop tests: one request with partial
// and final callbacks; prints one JSON line per callback and exits 0 after
// the final one (3 if it never comes).
//   node node_client.js --broker EP --service NAME --data JSON
//                       [--timeout MS] [--heartbeat MS] [--opts JSON]
// CURVE comes from PIGATO_NODE_SERVER_KEY (see zmq-shim).
// Output lines: {"type":"partial","err":E,"data":D}
//               {"type":"final","err":E,"data":D}

const pigato = require('pigato');

function parseArgs(argv) {
  const out = { timeout: 10000, heartbeat: 2500 };
  for (let i = 2; i < argv.length; i += 2) {
    out[argv[i].replace(/^--/, '')] = argv[i + 1];
  }
  if (!out.broker || !out.service || out.data === undefined) {
    console.error('usage: node_client.js --broker EP --service NAME --data JSON [--timeout MS]');
    process.exit(64);
  }
  return out;
}

const args = parseArgs(process.argv);
const client = new pigato.Client(args.broker, {
  heartbeat: +args.heartbeat,
  timeout: +args.timeout
});

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

client.on('error', function(err) {
  console.error('node client error:', err);
});

client.start();

client.request(args.service, JSON.parse(args.data), function(err, data) {
  emit({ type: 'partial', err: err, data: data });
}, function(err, data) {
  emit({ type: 'final', err: err === undefined ? null : err, data: data === undefined ? null : data });
  client.stop();
  setTimeout(function() {
    process.exit(0);
  }, 20);
}, Object.assign({ timeout: +args.timeout },
                 args.opts ? JSON.parse(args.opts) : {}));

setTimeout(function() {
  console.error('node client: no final reply');
  process.exit(3);
}, +args.timeout + 5000);
