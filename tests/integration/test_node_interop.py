#!/usr/bin/python3
"""Interop with the real Node pigato 0.0.46 through the C broker, over CURVE:
a Node pigato client calls C workers (`pigato serve` and a small libpigato
worker, tests/node/c_worker.c, for partial replies), and the C client
(`pigato request`) calls a Node pigato worker — partial replies, errors and
rejects included.

Node pigato runs on zeromq@6 through tests/node/zmq-shim (pigato wants the
old `zmq` 2.x module). Packages are installed on first run into
BUILD/node by tests/node/setup.sh and reused. Without node/npm the tests
are SKIPPED (tests/run.sh prints that); PIGATO_REQUIRE_NODE=1 makes that a
failure."""

import json
import os
import re
import shutil
import subprocess
import time
import unittest

import harness
from harness import BUILD, CLI_BIN, REPO, MeshTestCase, secs

NODE_DIR = os.path.join(REPO, "tests", "node")
NODE_MODULES = os.path.join(BUILD, "node", "node_modules")
C_WORKER = os.path.join(BUILD, "node", "c_worker")
HEARTBEAT = 500


def _unavailable(reason):
    if os.environ.get("PIGATO_REQUIRE_NODE") == "1":
        raise RuntimeError("Node interop required but unavailable: " + reason)
    raise unittest.SkipTest("Node interop NOT tested: " + reason)


def _build_c_worker():
    """Compiles tests/node/c_worker.c (harness.build_c_program)."""
    harness.build_c_program(os.path.join(NODE_DIR, "c_worker.c"), C_WORKER)


class NodeInteropTest(MeshTestCase):
    CURVE = True
    HEARTBEAT = HEARTBEAT

    @classmethod
    def setUpClass(cls):
        if not shutil.which("node") or not shutil.which("npm"):
            _unavailable("node or npm not found on PATH")
        r = subprocess.run([os.path.join(NODE_DIR, "setup.sh"), BUILD],
                           capture_output=True, text=True, timeout=600)
        if r.returncode == 77:
            _unavailable("node or npm not found")
        if r.returncode != 0:
            _unavailable("npm install failed (offline?):\n" + r.stderr[-2000:])
        _build_c_worker()

    # -- helpers ---------------------------------------------------------------

    def node_env(self):
        return {"NODE_PATH": NODE_MODULES, "NODE_NO_WARNINGS": "1",
                "PIGATO_NODE_SERVER_KEY": self.broker.key.public}

    def wait_registered(self, service, mark, proc):
        if self.wait_log(r"event=worker_ready\b.*\bservice=%s(\s|$)" % re.escape(service),
                         10, mark) is None:
            self.fail("%s never registered %s\n%s\n%s"
                      % (proc.name, service, proc.tail(), self.broker.tail(20)))

    def node_worker(self, service):
        mark = self.broker.mark()
        p = self.start(["node", os.path.join(NODE_DIR, "node_worker.js"),
                        "--broker", self.broker.endpoint, "--service", service,
                        "--heartbeat", HEARTBEAT], name="node-worker", env=self.node_env())
        self.wait_registered(service, mark, p)
        return p

    def c_worker(self, service):
        mark = self.broker.mark()
        p = self.start([C_WORKER, self.broker.endpoint, self.broker.key.public_file,
                        service, HEARTBEAT], name="c_worker")
        self.wait_registered(service, mark, p)
        return p

    def cli_worker(self, service, *tail):
        mark = self.broker.mark()
        p = self.start([CLI_BIN, "serve", service] + self.broker.cli_args() + list(tail),
                       name="pigato-serve")
        self.wait_registered(service, mark, p)
        return p

    def node_request(self, service, data, timeout=10000, opts=None):
        """Runs node_client.js; returns (partials, final) as decoded JSON."""
        extra = ["--opts", json.dumps(opts)] if opts else []
        p = self.start(["node", os.path.join(NODE_DIR, "node_client.js"),
                        "--broker", self.broker.endpoint, "--service", service,
                        "--data", json.dumps(data), "--timeout", timeout,
                        "--heartbeat", HEARTBEAT] + extra, name="node-client",
                       env=self.node_env())
        rc = p.wait(timeout / 1000.0 + 15)
        self.assertEqual(rc, 0, "node client failed\n" + p.tail())
        events = [json.loads(l) for l in p.text("stdout").splitlines() if l.strip()]
        partials = [e for e in events if e["type"] == "partial"]
        finals = [e for e in events if e["type"] == "final"]
        self.assertEqual(len(finals), 1, "expected one final callback: %r" % events)
        self.assertEqual(events[-1]["type"], "final", "partial after final: %r" % events)
        return partials, finals[0]

    def c_request(self, service, data, *extra, timeout=10000, stdin=None):
        args = [CLI_BIN, "request", service] + ([data] if data is not None else [])
        args += ["--timeout", str(timeout)] + self.broker.cli_args() + list(extra)
        p = self.start(args, name="pigato-request", stdin=stdin)
        rc = p.wait(timeout / 1000.0 + 15)
        self.assertIsNotNone(rc, "pigato request hung\n" + p.tail())
        return rc, p.text("stdout"), p.text("stderr")

    # -- Node client -> C workers ------------------------------------------------

    def test_node_client_calls_c_echo_worker(self):
        self.cli_worker("c.echo", "--echo")
        data = {"hello": "world", "list": [1, 2, 3], "unicode": "h\u00e9llo"}
        partials, final = self.node_request("c.echo", data)
        self.assertEqual(partials, [])
        self.assertEqual(final["err"], 0)
        self.assertEqual(final["data"], data)

    def test_node_client_gets_error_from_c_cmd_worker(self):
        self.cli_worker("c.fail", "--", "sh", "-c", "echo 'no such widget' >&2; exit 4")
        _, final = self.node_request("c.fail", "x")
        self.assertIsInstance(final["err"], str, "error should reach Node as err: %r" % final)
        self.assertIn("no such widget", final["err"])
        self.assertIsNone(final["data"])

    def test_node_client_gets_partials_from_c_worker(self):
        self.c_worker("c.stream")
        partials, final = self.node_request("c.stream", "partial:4")
        self.assertEqual([p["data"] for p in partials], ["part 0", "part 1", "part 2", "part 3"])
        self.assertTrue(all(p["err"] is None for p in partials), partials)
        self.assertEqual((final["err"], final["data"]), (0, "done"))

    def test_node_client_gets_error_from_c_worker(self):
        self.c_worker("c.err")
        _, final = self.node_request("c.err", "error:c worker says no")
        self.assertEqual(final["err"], "c worker says no")

    def test_node_client_rejected_by_only_c_worker_waits_for_another(self):
        # pigato's "Worker reject": the only worker rejects, a second one
        # starts and must get the request
        self.c_worker("c.rej")
        mark = self.broker.mark()
        client = self.start(["node", os.path.join(NODE_DIR, "node_client.js"),
                             "--broker", self.broker.endpoint, "--service", "c.rej",
                             "--data", json.dumps("reject"), "--timeout", 20000,
                             "--heartbeat", HEARTBEAT], name="node-client",
                            env=self.node_env())
        self.assertIsNotNone(self.wait_log(r"event=request_rejected service=c\.rej\b", 10, mark),
                             client.tail() + self.broker.tail())
        self.assertIsNone(client.wait(0.3), "a rejected request must wait for another worker")
        self.cli_worker("c.rej", "--echo")
        self.assertEqual(client.wait(30), 0, client.tail())
        final = json.loads(client.text("stdout").splitlines()[-1])
        self.assertEqual((final["err"], final["data"]), (0, "reject"), final)

    # -- C client -> Node worker -------------------------------------------------

    def test_c_client_calls_node_worker(self):
        self.node_worker("n.svc")
        rc, out, err = self.c_request("n.svc", '{"op":"echo","x":[1,"two"]}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"op": "echo", "x": [1, "two"]})
        rc, out, err = self.c_request("n.svc", None, stdin='{"op":"upper","text":"shout"}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), "SHOUT")

    def test_c_client_gets_partials_from_node_worker(self):
        self.node_worker("n.stream")
        rc, out, err = self.c_request("n.stream", '{"op":"partial","n":4}')
        self.assertEqual(rc, 0, err)
        self.assertEqual([json.loads(l) for l in out.splitlines()],
                         [{"part": 0}, {"part": 1}, {"part": 2}, {"part": 3}, {"done": 4}])

    def test_c_client_gets_error_from_node_worker(self):
        # Node pigato sends its error reply with the opts frame `undefined`.
        self.node_worker("n.err")
        rc, out, err = self.c_request("n.err", '{"op":"error","message":"node says no"}')
        self.assertEqual(rc, 1, "error reply must exit 1; out=%r err=%r" % (out, err))
        self.assertIn("node says no", err)

    def test_c_client_rejected_by_only_node_worker_waits_for_another(self):
        self.node_worker("n.rej")
        worker_log = self.procs[-1]
        client = self.start([CLI_BIN, "request", "n.rej", '{"op":"reject","reason":"busy"}',
                             "--timeout", "20000"] + self.broker.cli_args(),
                            name="pigato-request")
        self.assertIsNotNone(worker_log.wait_for_line(r'"event":"request"', 10, stream="stdout"),
                             worker_log.tail())
        self.assertIsNone(client.wait(0.3), "a rejected request must wait for another worker")
        self.cli_worker("n.rej", "--echo")
        self.assertEqual(client.wait(30), 0, client.tail())
        self.assertEqual(json.loads(client.text("stdout")), {"op": "reject", "reason": "busy"})

    def test_node_reject_moves_request_to_c_worker(self):
        # A Node worker that rejects and a C worker that serves, same
        # service: the request must end up served, whoever gets it first.
        self.node_worker("mixed")
        self.cli_worker("mixed", "--echo")
        for i in range(4):
            rc, out, err = self.c_request("mixed", '{"op":"reject","i":%d}' % i)
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(out), {"op": "reject", "i": i})

    # -- Node client -> Node worker, C broker ------------------------------------

    def test_node_client_calls_node_worker_through_c_broker(self):
        self.node_worker("n.both")
        partials, final = self.node_request("n.both", {"op": "partial", "n": 3})
        self.assertEqual([p["data"] for p in partials], [{"part": 0}, {"part": 1}, {"part": 2}])
        self.assertEqual((final["err"], final["data"]), (0, {"done": 3}))
        _, final = self.node_request("n.both", {"op": "error", "message": "nope"})
        self.assertEqual(final["err"], "nope")

    # -- issue 6 features, with Node pigato's own client and worker --------

    def node_worker_id(self, proc):
        """The routing id a node_worker.js process printed on connect."""
        self.assertIsNotNone(proc.wait_for_line(r'"event":"connect"', 10, stream="stdout"),
                             proc.tail())
        lines = [l for l in proc.text("stdout").splitlines() if '"connect"' in l]
        return json.loads(lines[0])["id"]

    def test_node_peers_with_wildcard_and_versioned_services(self):
        self.node_worker("n.wild*")
        _, final = self.node_request("n.wild.thing", {"op": "upper", "text": "abc"})
        self.assertEqual((final["err"], final["data"]), (0, "ABC"))
        old = self.node_worker("n.calc@1.2.3")
        new = self.node_worker("n.calc@1.5.0")
        new_id = self.node_worker_id(new)
        _, final = self.node_request("n.calc@^1.2", {"op": "whoami"})
        self.assertEqual(final["data"], new_id, "^1.2 did not pick the highest version")
        _, final = self.node_request("n.calc@~1.2.0", {"op": "whoami"})
        self.assertEqual(final["data"], self.node_worker_id(old))

    def test_node_client_directory_and_worker_targeting(self):
        first, second = self.node_worker("n.t"), self.node_worker("n.t")
        ids = sorted([self.node_worker_id(first), self.node_worker_id(second)])
        _, final = self.node_request("$dir", "n.t")
        self.assertEqual(sorted(final["data"]), ids)
        for _ in range(3):
            _, final = self.node_request("n.t", {"op": "whoami"}, opts={"workerId": ids[1]})
            self.assertEqual(final["data"], ids[1])
        _, final = self.node_request("n.t", {"op": "whoami"}, opts={"workerId": "nobody"})
        self.assertIn("E_WORKER_NOT_FOUND", str(final["err"]))


class NodeBrokerTest(MeshTestCase):
    """libpigato peers on their default framing ("auto") through Node
    pigato's own Broker: they offer the native framing in 0.0.46 frames,
    the Node broker answers in 0.0.46 framing, and they stay on it."""
    START_BROKER = False
    setUpClass = classmethod(NodeInteropTest.setUpClass.__func__)

    def setUp(self):
        MeshTestCase.setUp(self)
        self.key = harness.KeyPair(self.tmp, "node-broker")
        self.endpoint = "tcp://127.0.0.1:%d" % harness.free_port()
        self.node_broker = self.start(
            ["node", os.path.join(REPO, "bench", "node_broker.js"), "--bind", self.endpoint,
             "--intch", "tcp://127.0.0.1:%d" % harness.free_port(),
             "--secret-key", self.key.secret], name="node-broker",
            env={"NODE_PATH": NODE_MODULES, "NODE_NO_WARNINGS": "1"})
        if not self.node_broker.wait_for_line(r"event=ready", 15):
            self.fail("Node broker did not start\n" + self.node_broker.tail())

    def cli(self, *args, **kw):
        return MeshTestCase.cli(self, *args, "--broker", self.endpoint, "--server-key",
                                self.key.public_file, "--heartbeat", HEARTBEAT,
                                "--log-level", "debug", **kw)

    def test_auto_framing_peers_work_through_the_node_broker(self):
        serve = self.start([CLI_BIN, "serve", "n.echo", "--echo", "--broker", self.endpoint,
                            "--server-key", self.key.public_file, "--heartbeat", HEARTBEAT,
                            "--log-level", "debug"], name="pigato-serve")
        for attempt in range(50):           # the worker registers asynchronously
            rc, out, err = self.cli("request", "n.echo", '"ping"', "--timeout", "1000")
            if rc == 0:
                break
        self.assertEqual((rc, out.strip()), (0, '"ping"'), err + self.node_broker.tail())
        for peer, text in (("client", err), ("worker", serve.text())):
            self.assertNotRegex(text, r"event=\w+_native\b",
                                "the %s switched to native framing with a Node broker" % peer)
        self.assertTrue(self.node_broker.alive(), self.node_broker.tail())
        self.assertNotRegex(self.node_broker.text(), r"ERR_MSG|Error",
                            self.node_broker.tail())


if __name__ == "__main__":
    harness.main()
