#!/usr/bin/python3
"""Every client with every worker through one pigato-broker (issue 15):
clients {libpigato native, libpigato 0.0.46, Node pigato 0.0.46, MDP/0.2
from RFC 18 (pyzmq), `pigato request`} x workers {libpigato native,
libpigato 0.0.46, Node pigato, MDP/0.2 (pyzmq), `pigato serve --echo`,
`pigato serve -- CMD`}, for each of: a request, partials + final, an error
reply, a reject (pigato's: the only worker rejects, a worker that joins
later serves), a client timeout, a worker death without retry
(E_WORKER_LOST) and with retry (served by another worker).

One broker; each worker kind starts once, on a wildcard name (m.KIND.*),
so that every cell has its own service name (m.KIND.CLIENT.WHAT) and all
cells run at once. Deaths use a second instance of each kind on the longer
wildcard m.KIND.die.* that holds every request and is killed once it holds
them all (MDP workers hold one request each: one per cell); a retry then
falls to the first instance. A reject cell's backstop is a raw worker
that registers the cell's exact name once the broker logged the reject.

The matrix is printed (rows clients, columns workers, one cell per
behaviour: ok, FAIL or n/a, with the reasons for n/a below it); any FAIL
fails the test. libpigato peers are tests/integration/matrix_peer.c, Node
peers tests/node/node_worker.js and node_batch_client.js (installed as
for test_node_interop.py; without node the Node row and column are n/a
and the test says so, and PIGATO_REQUIRE_NODE=1 makes that a failure)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

import harness
from harness import BUILD, CLI_BIN, HERE, REPO, MeshTestCase, RawWorker, secs
from test_mdp import MdpClient, MdpWorker, C_FINAL

NODE_DIR = os.path.join(REPO, "tests", "node")
NODE_MODULES = os.path.join(BUILD, "node", "node_modules")
PEER = os.path.join(BUILD, "tests", "matrix_peer")
HEARTBEAT = 500

CLIENTS = ["lib-native", "lib-0.0.46", "node", "mdp", "cli"]
WORKERS = ["lib-native", "lib-0.0.46", "node", "mdp", "serve-echo", "serve-cmd"]
WHATS = ["request", "partial", "error", "reject", "timeout", "death", "retry"]
SHORT = {"lib-native": "lnat", "lib-0.0.46": "l046", "node": "node", "mdp": "mdp",
         "serve-echo": "echo", "serve-cmd": "cmd", "cli": "cli"}
HOLD_MS = 1500          # client timeout of the timeout cells
LONG_MS = 30000         # every other cell's

# The shell command `pigato serve -- CMD` runs: the request's op decides
CMD_SCRIPT = r"""
input=$(cat)
case "$input" in
  *'"op":"error"'*) echo boom >&2; exit 3 ;;
  *'"op":"hold"'*) exec sleep 30 ;;
  *) printf '%s' "$input" ;;
esac
"""
# ... and the dying instance: note the request (a cell's request may come
# twice, e.g. re-sent by a client whose link came up late: the test counts
# distinct requests), wait for its parent to go
CMD_DYING = r"""
input=$(cat)
printf '%s\n' "$input" >> "$MATRIX_HELD"
while kill -0 $PPID 2>/dev/null; do sleep 0.1; done
"""


def not_applicable(client, worker, what):
    """The reason a cell cannot be expressed, or None."""
    if worker == "mdp" and what == "error":
        return "MDP/0.2 has no error status (RFC 18)"
    if worker == "mdp" and what == "reject":
        return "MDP/0.2 has no reject (RFC 18)"
    if worker == "serve-echo" and what in ("partial", "error", "reject", "timeout",
                                           "death", "retry"):
        return "pigato serve --echo only echoes, at once (no partials, errors, " \
               "rejects; it never holds a request)"
    if worker == "serve-cmd" and what in ("partial", "reject"):
        return "pigato serve -- CMD answers once per run: no partials, no reject"
    if client == "mdp" and what == "timeout":
        return "MDP/0.2 requests carry no timeout (the broker applies 60 s)"
    if client == "mdp" and what == "retry":
        return "MDP/0.2 requests have no retry (RFC 18)"
    return None


def dumps(value):
    """Compact JSON, as Node pigato sends it."""
    return json.dumps(value, separators=(",", ":"))


def decode(data):
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8", "replace")
    if isinstance(data, str):
        try:
            return json.loads(data)
        except ValueError:
            return data
    return data


class Outcome:
    """What a client saw: kind ok | error | timeout | none, the partials
    and the final data (JSON-decoded where it is JSON)."""

    def __init__(self, kind="none", data=None, partials=None):
        self.kind, self.data, self.partials = kind, data, partials or []

    def __repr__(self):
        return "Outcome(%s, data=%r, partials=%r)" % (self.kind, self.data, self.partials)


def _build_peer():
    harness.build_c_program(os.path.join(HERE, "matrix_peer.c"), PEER)


def _node_available():
    """None if Node pigato is ready, else why not."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "node or npm not found on PATH"
    r = subprocess.run([os.path.join(NODE_DIR, "setup.sh"), BUILD], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        return "npm install failed (offline?): " + r.stderr[-300:]
    return None


class MatrixTest(MeshTestCase):
    CURVE = False
    HEARTBEAT = HEARTBEAT

    @classmethod
    def setUpClass(cls):
        _build_peer()
        cls.node_missing = _node_available()
        if cls.node_missing and os.environ.get("PIGATO_REQUIRE_NODE") == "1":
            raise RuntimeError("Node interop required but unavailable: " + cls.node_missing)

    # -- workers -------------------------------------------------------------

    def node_env(self):
        return {"NODE_PATH": NODE_MODULES, "NODE_NO_WARNINGS": "1"}

    def start_worker(self, kind, service, dying=False):
        """Starts a worker process of kind on service; returns it (None for
        the in-process MDP workers, made by the caller)."""
        ep = self.broker.endpoint
        if kind in ("lib-native", "lib-0.0.46"):
            framing = "native" if kind == "lib-native" else "0.0.46"
            args = [PEER, "worker", ep, service, framing] + (["hold-all"] if dying else [])
            return self.start(args, name="%s%s" % (kind, "-dying" if dying else ""))
        if kind == "node":
            args = ["node", os.path.join(NODE_DIR, "node_worker.js"), "--broker", ep,
                    "--service", service, "--heartbeat", HEARTBEAT]
            args += ["--hold-all", "1"] if dying else []
            return self.start(args, name="node%s" % ("-dying" if dying else ""),
                              env=self.node_env())
        if kind == "serve-echo":
            return self.start([CLI_BIN, "serve", service, "--echo"] + self.broker.cli_args(),
                              name="serve-echo")
        if kind == "serve-cmd":
            script = CMD_DYING if dying else CMD_SCRIPT
            return self.start([CLI_BIN, "serve", service, "--concurrency", "40"]
                              + self.broker.cli_args() + ["--", "sh", "-c", script],
                              name="serve-cmd%s" % ("-dying" if dying else ""),
                              env={"MATRIX_HELD": self.held_file})
        raise AssertionError(kind)

    def held_by(self, kind, proc):
        """How many requests a dying instance holds now."""
        if kind == "serve-cmd":
            try:
                with open(self.held_file) as f:
                    return len(set(line for line in f if line.strip()))
            except FileNotFoundError:
                return 0
        return proc.count(r'"event":"request"', stream="stdout")

    # -- the MDP workers, pumped from the test's loop --------------------------

    def mdp_serve(self, worker, now):
        """Answers what an in-process MDP worker got: partials, echo, or a
        late FINAL for a held request (so it is free again)."""
        while True:
            m = worker.recv(lambda m: len(m) >= 5 and m[:2] == [b"MDPW02", b"\x02"], 0,
                            skip_noise=False)
            if m is None:
                break
            client, body = m[2], m[4:]
            request = decode(body[0]) if body else None
            op = request.get("op") if isinstance(request, dict) else None
            if worker in self.mdp_dying:
                continue                    # held until it dies
            if op == "hold":
                self.mdp_late.append((now + secs(HOLD_MS / 1000.0 + 1), worker, client))
            elif op == "partial":
                for i in range(request["n"]):
                    worker.partial(client, dumps({"part": i}))
                worker.final(client, dumps({"done": request["n"]}))
            else:
                worker.final(client, body[0] if body else b"")
        for late in [l for l in self.mdp_late if l[0] <= now]:
            self.mdp_late.remove(late)
            late[1].final(late[2], '"late"')

    # -- cells -----------------------------------------------------------------

    def cell_request(self, client, worker, what):
        """(service, data, opts) of a cell."""
        k, c = SHORT[worker], SHORT[client]
        opts = {"timeout": HOLD_MS if what == "timeout" else LONG_MS}
        if what == "retry":
            opts["retry"] = 1
        if what in ("death", "retry"):
            service = "m.%s.die.%s.%s" % (k, c, what)
        else:
            service = "m.%s.%s.%s" % (k, c, what)
        data = {"request": {"op": "echo", "cell": "%s/%s" % (c, k)},
                "partial": {"op": "partial", "n": 2},
                "error": {"op": "error", "message": "boom"},
                "reject": {"op": "reject"},
                "timeout": {"op": "hold"},
                "death": {"op": "die", "cell": "%s/%s" % (c, k), "what": "death"},
                "retry": {"op": "die", "cell": "%s/%s" % (c, k), "what": "retry"}}[what]
        return service, data, opts

    def judge(self, client, worker, what, data, outcome):
        """None if the outcome is right, else what is wrong."""
        text = json.dumps(outcome.data) if not isinstance(outcome.data, str) else outcome.data
        if client == "mdp" and what in ("error", "death"):
            # MDP has no status: an error is a FINAL whose body is its text
            want = "boom" if what == "error" else "E_WORKER_LOST"
            return None if outcome.kind == "ok" and want in text \
                else "want %s, got %r" % (want, outcome)
        if what in ("request", "retry"):
            ok = outcome.kind == "ok" and outcome.data == data
        elif what == "partial":
            ok = (outcome.kind == "ok" and outcome.data == {"done": 2}
                  and outcome.partials == [{"part": 0}, {"part": 1}])
        elif what == "error":
            ok = outcome.kind == "error" and "boom" in text
        elif what == "reject":
            ok = outcome.kind == "ok" and outcome.data == "backstop"
        elif what == "timeout":
            ok = outcome.kind == "timeout"
        elif what == "death":
            ok = outcome.kind == "error" and "E_WORKER_LOST" in text
        return None if ok else "got %r" % (outcome,)

    # -- the test --------------------------------------------------------------

    def test_every_client_with_every_worker(self):
        self.held_file = os.path.join(self.tmp, "held")
        self.mdp_dying, self.mdp_late = [], []
        node_ok = self.node_missing is None
        clients = CLIENTS if node_ok else [c for c in CLIENTS if c != "node"]
        workers = WORKERS if node_ok else [w for w in WORKERS if w != "node"]

        # Workers: each kind once on m.KIND.*, a dying one on m.KIND.die.*
        mark = self.broker.mark()
        procs, dying = {}, {}
        expected_ready = 0
        for kind in workers:
            if kind == "mdp":
                continue
            procs[kind] = self.start_worker(kind, "m.%s.*" % SHORT[kind])
            expected_ready += 1
            if kind != "serve-echo":
                dying[kind] = self.start_worker(kind, "m.%s.die.*" % SHORT[kind], dying=True)
                expected_ready += 1
        mdp_main = []
        if "mdp" in workers:
            for _ in range(3):
                w = MdpWorker(self.mesh, self.broker.endpoint)
                w.ready("m.mdp.*")
                mdp_main.append(w)
                expected_ready += 1
        # One dying MDP worker per death cell, on the cell's exact name
        cells = {}
        for c in clients:
            for k in workers:
                for what in WHATS:
                    reason = not_applicable(c, k, what)
                    cells[(c, k, what)] = ("n/a", reason) if reason else None
        if "mdp" in workers:
            for c in clients:
                for what in ("death", "retry"):
                    if cells[(c, "mdp", what)] is None:
                        w = MdpWorker(self.mesh, self.broker.endpoint)
                        w.ready(self.cell_request(c, "mdp", what)[0])
                        self.mdp_dying.append(w)
                        expected_ready += 1
        deadline = time.monotonic() + secs(30)
        while (self.broker.count(r"event=worker_ready\b", mark) < expected_ready
               and time.monotonic() < deadline):
            self.mesh.pump(0.05)
        self.assertEqual(self.broker.count(r"event=worker_ready\b", mark), expected_ready,
                         "not every worker registered\n" + self.broker.tail(30) + "\n"
                         + "\n".join(p.tail(5) for p in list(procs.values())
                                     + list(dying.values())))

        # Every cell's request, at once
        live = [key for key, value in cells.items() if value is None]
        outcomes = {key: Outcome() for key in live}
        batches = {"lib-native": [], "lib-0.0.46": [], "node": []}
        cli_procs, mdp_clients = {}, {}
        for key in live:
            c, k, what = key
            service, data, opts = self.cell_request(*key)
            cell_id = "%s|%s|%s" % key
            if c in batches:
                batches[c].append((cell_id, service, data, opts))
            elif c == "cli":
                cli_procs[key] = self.start(
                    [CLI_BIN, "request", service, dumps(data), "--opts", dumps(opts)]
                    + self.broker.cli_args(), name="cli " + cell_id)
            else:
                m = MdpClient(self.mesh, self.broker.endpoint)
                m.request(service, dumps(data))
                mdp_clients[key] = m
        batch_procs = {}
        for c, batch in batches.items():
            if not batch:
                continue
            if c == "node":
                spec = os.path.join(self.tmp, "node.json")
                with open(spec, "w") as f:
                    json.dump([{"id": i, "service": s, "data": d, "opts": o}
                               for i, s, d, o in batch], f)
                batch_procs[c] = self.start(
                    ["node", os.path.join(NODE_DIR, "node_batch_client.js"), "--broker",
                     self.broker.endpoint, "--spec", spec, "--heartbeat", HEARTBEAT],
                    name="node-client", env=self.node_env())
            else:
                spec = os.path.join(self.tmp, c + ".spec")
                with open(spec, "w") as f:
                    for i, s, d, o in batch:
                        f.write("%s\t%s\t%s\t%s\n" % (i, s, dumps(d), dumps(o)))
                framing = "native" if c == "lib-native" else "0.0.46"
                batch_procs[c] = self.start([PEER, "client", self.broker.endpoint, framing,
                                             spec], name="client " + c)

        # Pump: MDP workers answer, backstops join rejected cells, dying
        # instances die once they hold their cells' requests, clients end
        def death_cells(kind):
            return sum(1 for key in live if key[1] == kind and key[2] in ("death", "retry"))

        backstops = {}
        killed = set()
        deadline = time.monotonic() + secs(60)
        while time.monotonic() < deadline:
            now = time.monotonic()
            for w in mdp_main:
                self.mdp_serve(w, now)
            for w in self.mdp_dying:
                self.mdp_serve(w, now)
            for m in re.finditer(r"event=request_rejected service=(m\.\S+\.reject) ",
                                 self.broker.text()):
                name = m.group(1)
                if name not in backstops:
                    backstops[name] = RawWorker(self.mesh, self.broker.endpoint)
                    backstops[name].ready(name, wait=False)
            for w in backstops.values():
                req = w.next_request(0)
                if req is not None:
                    w.reply(req, '"backstop"')
            for kind, proc in dying.items():
                if kind not in killed and self.held_by(kind, proc) >= death_cells(kind):
                    proc.stop(signal.SIGKILL, 5)
                    killed.add(kind)
            if self.mdp_dying and "mdp" not in killed and all(
                    any(m[:2] == [b"MDPW02", b"\x02"] for m in w.received)
                    for w in self.mdp_dying):
                for w in self.mdp_dying:
                    w.close()
                killed.add("mdp")
            for key, m in mdp_clients.items():
                r = m.recv(lambda msg: len(msg) >= 3 and msg[0] == b"MDPC02", 0,
                           skip_noise=False)
                while r is not None:
                    body = decode(r[3]) if len(r) > 3 else None
                    if r[1] == C_FINAL:
                        outcomes[key].kind, outcomes[key].data = "ok", body
                    else:
                        outcomes[key].partials.append(body)
                    r = m.recv(lambda msg: len(msg) >= 3 and msg[0] == b"MDPC02", 0,
                               skip_noise=False)
            waiting_mdp = [k for k in mdp_clients
                           if outcomes[k].kind == "none" and k[2] != "timeout"]
            if (not waiting_mdp and all(not p.alive() for p in batch_procs.values())
                    and all(not p.alive() for p in cli_procs.values())):
                break
            self.mesh.pump(0.02)

        # Collect what the processes said
        for c, proc in batch_procs.items():
            proc.wait(5)
            for line in proc.text("stdout").splitlines():
                event = json.loads(line)
                key = tuple(event["id"].split("|"))
                out = outcomes[key]
                if c == "node":
                    err, data = event["err"], event["data"]
                    if event["type"] == "partial":
                        out.partials.append(data)
                    elif err in (0, None):
                        out.kind, out.data = "ok", data
                    elif err == "C_TIMEOUT":
                        out.kind, out.data = "timeout", err
                    else:
                        out.kind, out.data = "error", err
                else:
                    data = decode(event["data"])
                    if event["type"] == "partial":
                        out.partials.append(data)
                    elif event["status"] == 0:
                        out.kind, out.data = "ok", data
                    elif event["status"] == -7:
                        out.kind, out.data = "timeout", data
                    else:
                        out.kind, out.data = "error", data
        for key, proc in cli_procs.items():
            rc = proc.wait(5)
            lines = [decode(l) for l in proc.text("stdout").splitlines()]
            out = outcomes[key]
            out.partials = lines[:-1]
            if rc == 0:
                out.kind, out.data = "ok", lines[-1] if lines else None
            elif rc == 1:
                out.kind, out.data = "error", proc.text("stderr")
            elif rc == 2 and "timed out" in proc.text("stderr"):
                out.kind, out.data = "timeout", proc.text("stderr")
            else:
                out.data = "exit %r: %s" % (rc, proc.text("stderr")[-200:])

        # Judge, print, fail on any FAIL
        failures = []
        for key in live:
            service, data, opts = self.cell_request(*key)
            wrong = self.judge(*key, data, outcomes[key])
            cells[key] = ("ok", None) if wrong is None else ("FAIL", wrong)
            if wrong:
                failures.append("%s -> %s, %s: %s" % (key + (wrong,)))
        if not node_ok:
            for c in CLIENTS:
                for k in WORKERS:
                    if "node" in (c, k):
                        for what in WHATS:
                            cells[(c, k, what)] = ("n/a", "Node pigato unavailable: "
                                                   + self.node_missing)
        self.print_matrix(cells)
        self.assertEqual(failures, [], "\n".join(failures) + "\n" + self.broker.tail(20))

    def print_matrix(self, cells):
        reasons = []
        width = 17
        lines = ["", "Matrix (rows: clients, columns: workers; per cell: %s)"
                 % " ".join(WHATS), ""]
        lines.append("%-12s" % "" + "".join(w.ljust(width) for w in WORKERS))
        for c in CLIENTS:
            for i, what in enumerate(WHATS):
                row = ("%-12s" % c if i == 0 else "%-12s" % "")
                for k in WORKERS:
                    state, reason = cells.get((c, k, what), ("n/a", "not run"))
                    mark = state
                    if state == "n/a":
                        if reason not in reasons:
                            reasons.append(reason)
                        mark = "n/a[%d]" % (reasons.index(reason) + 1)
                    row += ("%s %s" % (what[:7], mark)).ljust(width + 0)
                lines.append(row)
            lines.append("")
        for i, reason in enumerate(reasons):
            lines.append("  [%d] %s" % (i + 1, reason))
        ok = sum(1 for v in cells.values() if v[0] == "ok")
        fail = sum(1 for v in cells.values() if v[0] == "FAIL")
        na = sum(1 for v in cells.values() if v[0] == "n/a")
        lines.append("")
        lines.append("cells: %d ok, %d FAIL, %d n/a" % (ok, fail, na))
        sys.stderr.write("\n".join(lines) + "\n")
        sys.stderr.flush()


if __name__ == "__main__":
    harness.main()
