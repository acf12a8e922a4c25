'use strict';
// A Node pigato 0.0.46 Worker for interop tests.
//   node node_worker.js --broker EP --service NAME [--heartbeat MS] [--concurrency N]
//                       [--hold-all 1]
// CURVE comes from PIGATO_NODE_SERVER_KEY (see zmq-shim). Each request's
// data (JSON) picks the behaviour:
//   {"op":"partial","n":N}      N partial replies {"part":i}, then final {"done":N}
//   {"op":"error","message":M}  reply.error(M)
//   {"op":"reject","reason":R}  reply.reject(R)
//   {"op":"upper","text":T}     final T.toUpperCase()
//   {"op":"whoami"}             final: this worker's id (its routing id)
//   {"op":"hold"}               no answer (so is every request with --hold-all)
//   anything else               echoed back as the final reply
// Prints one JSON line per event on stdout: connect, request.

const pigato = require('pigato');

function parseArgs(argv) {
  const out = { heartbeat: 2500, concurrency: 100 };
  for (let i = 2; i < argv.length; i += 2) {
    out[argv[i].replace(/^--/, '')] = argv[i + 1];
  }
  if (!out.broker || !out.service) {
    console.error('usage: node_worker.js --broker EP --service NAME [--heartbeat MS] [--concurrency N]');
    process.exit(64);
  }
  return out;
}

const args = parseArgs(process.argv);
const worker = new pigato.Worker(args.broker, args.service, {
  heartbeat: +args.heartbeat,
  concurrency: +args.concurrency
});

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

worker.on('connect', function() {
  emit({ event: 'connect', id: worker.socketId });
});

worker.on('error', function(err) {
  console.error('node worker error:', err);
});

worker.on('request', function(data, reply, opts) {
  emit({ event: 'request', data: data, opts: opts });
  const op = data && typeof data === 'object' ? data.op : undefined;
  if (args['hold-all'] || op === 'hold') {
    return;
  } else if (op === 'partial') {
    for (let i = 0; i < data.n; i++) {
      reply.write({ part: i });
    }
    reply.end({ done: data.n });
  } else if (op === 'error') {
    reply.error(data.message);
  } else if (op === 'reject') {
    reply.reject(data.reason);
  } else if (op === 'whoami') {
    reply.end(worker.socketId);
  } else if (op === 'upper') {
    reply.end(String(data.text).toUpperCase());
  } else {
    reply.end(data);
  }
});

function shutdown() {
  worker.stop();
  setTimeout(function() {
    process.exit(0);
  }, 50);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

worker.start();
