'use strict';
// A Node pigato 0.0.46 Client for test_matrix.py: sends every request of a
// spec file at once and prints one JSON line per callback; exits 0 once
// every request had its final callback (3 if one never comes).
//   node node_batch_client.js --broker EP --spec FILE [--heartbeat MS]
// FILE: a JSON array of {"id", "service", "data" (any JSON), "opts"}.
// Output lines: {"id":ID,"type":"partial"|"final","err":E,"data":D}

const fs = require('fs');
const pigato = require('pigato');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
if (!args.broker || !args.spec) {
  console.error('usage: node_batch_client.js --broker EP --spec FILE [--heartbeat MS]');
  process.exit(64);
}
const spec = JSON.parse(fs.readFileSync(args.spec, 'utf8'));
const client = new pigato.Client(args.broker, { heartbeat: +(args.heartbeat || 2500) });
client.on('error', function(err) {
  console.error('node client error:', err);
});
client.start();

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

let pending = spec.length;
let longest = 0;
spec.forEach(function(cell) {
  const opts = cell.opts || {};
  longest = Math.max(longest, opts.timeout || 60000);
  client.request(cell.service, cell.data, function(err, data) {
    emit({ id: cell.id, type: 'partial', err: err === undefined ? null : err,
           data: data === undefined ? null : data });
  }, function(err, data) {
    emit({ id: cell.id, type: 'final', err: err === undefined ? null : err,
           data: data === undefined ? null : data });
    if (--pending === 0) {
      client.stop();
      setTimeout(function() {
        process.exit(0);
      }, 20);
    }
  }, opts);
});
if (pending === 0) {
  process.exit(0);
}
setTimeout(function() {
  console.error('node client: ' + pending + ' request(s) without a final reply');
  process.exit(3);
}, longest + 10000);
