#!/usr/bin/python3
"""make soak-hostile (issue 14): victims at a steady load while attackers
flood the broker, one technique at a time.

One pigato-broker, CURVE with an ACL of five identities:
  victim-client   may call victim.echo (and $dir)
  victim-worker   may serve victim.echo
  attacker-none   no rights at all
  attacker-call   may call attack.* (and $dir); no worker serves attack.void
  attacker-serve  may serve attack.*
The victims run throughout: pigato-steady (bench/steady.c) sends
VICTIM_RATE requests a second (open loop) with a body of their own each
to two echo workers (pigato-bench --worker), records every latency and
checks every reply body. The phases: a quiet baseline, then each
technique for PHASE seconds with its attacker processes
(bench/soak_attack.py, niced), ended by pid, then SETTLE seconds for
the broker to recover, and a quiet phase again at the end:
  denied      a steady stream of denied requests (no-rights and call-only)
  takeover    connections taking over the routing ids of peers that just
              left (three identities, one pool of ids) and the victims'
              worker ids, while flooding
  large       one message of 40 x 15 MiB frames, repeated (no rights)
  pending     requests with timeout -1 (1 MiB and tiny) for a service no
              worker serves
  slow        a client whose requests get 4 MiB replies that it never reads
  targeted    requests with workerId at a worker that never answers, and
              at the victims' workers
  spread      requests over 30,000 names under an attack.* worker
  dir         a $dir flood
  handshake   handshakes with unknown keys
  idle        connections that never handshake
Per phase: victim throughput, p50 and p99 latency (of the requests sent
in the phase that succeeded), p99 against the quiet baseline (the p99 of
the first and last quiet phases together), requests
lost (timed out or lost with the broker), failed (an error reply), wrong
(a reply body not the request's), the broker's peak and after-settle RSS
(VmRSS every 100 ms) and its CPU, and how many of the victims' new
connections (`pigato request victim.echo`, one a second) got their
reply, and the slowest. Then a verdict per goal: p99 <= 2x quiet, RSS
under the ceiling, no victim request lost or leaked.

Newer brokers' limits are used when present: --max-memory, --max-inbound
and --max-outbound when `pigato-broker --help` lists them, and `limit`
lines in the ACL when `pigato-broker --check-acl` accepts one. The RSS
ceiling is SOAK_MAX_MEMORY whether or not the broker can enforce it.

A measurement, not a test: exits 0 when it ran, 1 when the broker
crashed or a victim got a wrong body or an attacker got a victim's
body (a security failure), 2 when it could not run.
  bench/soak_hostile.py BUILD
Environment: SOAK_PHASE (10 s per phase), SOAK_SETTLE (3 s),
SOAK_ONLY (techniques to run, comma-separated), VICTIM_RATE (2000
requests/s), VICTIM_TIMEOUT (5000 ms), SOAK_MAX_MEMORY (1G: the RSS
ceiling and --max-memory), SOAK_MAX_INBOUND and SOAK_MAX_OUTBOUND (64M),
SOAK_MAX_CONNECTIONS (4096, --max-connections), SOAK_IDLE (5000 idle
connections), SOAK_LIMIT (the limit line's keys for the attackers,
"pending=1000 pending-bytes=64M rate=500"), SOAK_SAFETY_MB (4096: an
attacker is stopped early when the broker's RSS passes it, so that an
unbounded broker does not take the machine down), SOAK_ATTACK_NICE (10).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
PHASE = float(os.environ.get("SOAK_PHASE", "10"))
SETTLE = float(os.environ.get("SOAK_SETTLE", "3"))
RATE = float(os.environ.get("VICTIM_RATE", "2000"))
VICTIM_TIMEOUT = int(os.environ.get("VICTIM_TIMEOUT", "5000"))
MAX_MEMORY = os.environ.get("SOAK_MAX_MEMORY", "1G")
MAX_INBOUND = os.environ.get("SOAK_MAX_INBOUND", "64M")
MAX_OUTBOUND = os.environ.get("SOAK_MAX_OUTBOUND", "64M")
LIMIT = os.environ.get("SOAK_LIMIT", "pending=1000 pending-bytes=64M rate=500")
SAFETY_KB = int(os.environ.get("SOAK_SAFETY_MB", "4096")) * 1024
NICE = int(os.environ.get("SOAK_ATTACK_NICE", "10"))
IDLE = int(os.environ.get("SOAK_IDLE", "5000"))
MAX_CONNECTIONS = os.environ.get("SOAK_MAX_CONNECTIONS", "4096")
TECHNIQUES = ["denied", "takeover", "large", "pending", "slow", "targeted",
              "spread", "dir", "handshake", "idle"]
ONLY = [t for t in os.environ.get("SOAK_ONLY", "").split(",") if t]


def size_kb(text):
    m = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.I)
    if not m:
        sys.exit("soak-hostile: bad size %r (expected N, NK, NM or NG)" % text)
    return int(m.group(1)) * {"": 1 / 1024, "K": 1, "M": 1024, "G": 1 << 20}[m.group(2).upper()]


CEILING_KB = size_kb(MAX_MEMORY)
WORK = tempfile.mkdtemp(prefix="soak-hostile-")
PROCS = []                      # every process we started, ended by pid


def start(argv, name, nice=0, **kw):
    log = open(os.path.join(WORK, name + ".log"), "w")
    argv = [str(a) for a in argv]
    if nice:
        argv = ["nice", "-n", str(nice)] + argv
    p = subprocess.Popen(argv, stdout=kw.pop("stdout", log), stderr=log,
                         stdin=subprocess.DEVNULL, **kw)
    p.name, p.log = name, log.name
    PROCS.append(p)
    return p


def stop(p, grace=3.0, sig=signal.SIGTERM):
    """Ends one of our processes by its pid; returns its exit status."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    if p in PROCS:
        PROCS.remove(p)
    return p.returncode


def cleanup():
    for p in list(PROCS):
        stop(p, 1.0)
    shutil.rmtree(WORK, ignore_errors=True)


def wait_log(p, pattern, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(p.log) as f:
            if re.search(pattern, f.read()):
                return True
        if p.poll() is not None:
            break
        time.sleep(0.05)
    with open(p.log) as f:
        sys.stderr.write("soak-hostile: %s: no %r\n%s" % (p.name, pattern, f.read()[-2000:]))
    return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return None


class Sampler(threading.Thread):
    """The broker's RSS and CPU every 100 ms; calls on_over_safety once
    when RSS passes the safety limit."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.on_over_safety = pid, [], None
        self.lock = threading.Lock()

    def run(self):
        while True:
            rss, cpu = proc_status_kb(self.pid, "VmRSS"), proc_cpu_s(self.pid)
            if rss is None:
                return
            with self.lock:
                self.samples.append((time.monotonic(), rss, cpu))
            if rss > SAFETY_KB and self.on_over_safety:
                hook, self.on_over_safety = self.on_over_safety, None
                hook()
            time.sleep(0.1)

    def window(self, t0, t1):
        with self.lock:
            return [s for s in self.samples if t0 <= s[0] <= t1]


def keygen(name):
    subprocess.run([os.path.join(BUILD, "pigato-keygen"), "new", name, "-o", WORK],
                   check=True, stdout=subprocess.DEVNULL)
    return os.path.join(WORK, name + ".key_secret")


def check_acl(text):
    path = os.path.join(WORK, "probe.acl")
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([os.path.join(BUILD, "pigato-broker"), "--check-acl", path],
                       capture_output=True, text=True)
    return r.returncode == 0


def dir_ids(endpoint, server_key, key):
    """The victim workers' ids, as $dir shows them to the victim client."""
    r = subprocess.run([os.path.join(BUILD, "pigato"), "request", "$dir", '"victim.echo"',
                        "--broker", endpoint, "--server-key", server_key, "--key", key,
                        "--timeout", "5000"], capture_output=True, text=True)
    return re.findall(r'"([^"]+)"', r.stdout) if r.returncode == 0 else []


class Probe(threading.Thread):
    """A victim that connects anew: `pigato request victim.echo` with the
    victim client's key every second; records (time, ok, seconds)."""

    def __init__(self, argv):
        super().__init__(daemon=True)
        self.argv, self.results, self.running = argv, [], True

    def run(self):
        while self.running:
            started = time.monotonic()
            try:
                r = subprocess.run(self.argv, capture_output=True, text=True,
                                   timeout=VICTIM_TIMEOUT / 1000 + 5)
                ok = r.returncode == 0 and r.stdout.strip() == '"fresh"'
            except subprocess.TimeoutExpired:
                ok = False
            self.results.append((started, ok, time.monotonic() - started))
            time.sleep(max(0, 1 - (time.monotonic() - started)))


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def main():
    broker_bin = os.path.join(BUILD, "pigato-broker")
    for prog in ("pigato-broker", "pigato", "pigato-keygen", "pigato-bench", "pigato-steady"):
        if not os.access(os.path.join(BUILD, prog), os.X_OK):
            sys.stderr.write("soak-hostile: %s/%s missing (make soak-hostile builds it)\n"
                             % (BUILD, prog))
            return 2
    keys = {n: keygen(n) for n in ("broker", "victim-client", "victim-worker",
                                   "attacker-none", "attacker-call", "attacker-serve")}
    server_key = os.path.join(WORK, "broker.key")
    with open(server_key) as f:
        server_z85 = re.search(r'public-key = "(.*)"', f.read()).group(1)

    # The ACL, with limit lines where the broker knows them
    acl = "".join("identity %s %s.key\n" % (n, n) for n in keys if n != "broker")
    acl += ("allow victim-client call victim.echo $dir\n"
            "allow victim-worker serve victim.echo\n"
            "allow attacker-call call attack.* $dir\n"
            "allow attacker-serve serve attack.*\n")
    limits = []
    for subject in ("attacker-call", "attacker-none", "attacker-serve"):
        line = "limit %s %s\n" % (subject, LIMIT)
        if check_acl(acl + line):
            limits.append(line)
    acl += "".join(limits)
    acl_path = os.path.join(WORK, "hostile.acl")
    with open(acl_path, "w") as f:
        f.write(acl)
    helptext = subprocess.run([broker_bin, "--help"], capture_output=True, text=True)
    helptext = helptext.stdout + helptext.stderr
    options = ["--max-connections", MAX_CONNECTIONS]
    for option, value in (("--max-memory", MAX_MEMORY), ("--max-inbound", MAX_INBOUND),
                          ("--max-outbound", MAX_OUTBOUND)):
        if option in helptext:
            options += [option, value]

    endpoint = "tcp://127.0.0.1:%d" % free_port()
    broker = start([broker_bin, "--bind", endpoint, "--key", keys["broker"], "--acl", acl_path,
                    "--log-level", "info"] + options, "broker")
    if not wait_log(broker, r"event=ready"):
        return 2
    sampler = Sampler(broker.pid)
    sampler.start()
    worker = start([os.path.join(BUILD, "pigato-bench"), "--worker", "--broker", endpoint,
                    "--server-key", server_key, "--key", keys["victim-worker"],
                    "--service", "victim.echo", "--workers", "2"], "victim-worker")
    if not wait_log(worker, r"event=ready"):
        return 2
    records = os.path.join(WORK, "victim.records")
    victim = start([os.path.join(BUILD, "pigato-steady"), "--broker", endpoint,
                    "--server-key", server_key, "--key", keys["victim-client"],
                    "--service", "victim.echo", "--rate", RATE, "--timeout", VICTIM_TIMEOUT,
                    "--out", records], "victim-client",
                   stdout=open(os.path.join(WORK, "victim.totals"), "w"))
    if not wait_log(victim, r"event=ready"):
        return 2
    victim_ids = dir_ids(endpoint, server_key, keys["victim-client"])
    probe = Probe([os.path.join(BUILD, "pigato"), "request", "victim.echo", '"fresh"',
                   "--broker", endpoint, "--server-key", server_key,
                   "--key", keys["victim-client"], "--timeout", str(VICTIM_TIMEOUT)])
    probe.start()

    print("# %s %d cores; soak-hostile: victims %g req/s (timeout %d ms), phases %g s "
          "+ %g s settle, attackers nice %d" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               os.cpu_count(), RATE, VICTIM_TIMEOUT, PHASE,
                                               SETTLE, NICE))
    print("# broker options: %s; ACL limit lines: %s; RSS ceiling %s; victim worker ids: %d"
          % (" ".join(options) + ("" if "--max-memory" in options
                                  else " (no --max-memory/--max-inbound/--max-outbound)"),
             "".join(limits).strip().replace("\n", "; ") or "not supported", MAX_MEMORY,
             len(victim_ids)))
    sys.stdout.flush()

    def attacker(role, identity, name, *extra):
        argv = ["/usr/bin/python3", os.path.join(HERE, "soak_attack.py"), role,
                "--endpoint", endpoint, "--server-key", server_z85,
                "--stats", os.path.join(WORK, name + ".stats")]
        if identity:
            argv += ["--key", keys[identity]]
        return start(argv + list(extra), name, nice=NICE)

    ids = ",".join(victim_ids)
    plans = {
        "denied": [("denied", "attacker-none", "denied-none", "--service", "victim.echo"),
                   ("denied", "attacker-call", "denied-call", "--service", "victim.echo")],
        "takeover": [("takeover", "attacker-call", "takeover-call", "--mode", "call", "--ids", ids),
                     ("takeover", "attacker-serve", "takeover-serve", "--mode", "serve",
                      "--ids", ids),
                     ("takeover", "attacker-none", "takeover-none", "--mode", "none", "--ids", ids)],
        "large": [("large", "attacker-none", "large")],
        "pending": [("pending", "attacker-call", "pending", "--service", "attack.void")],
        "slow": [("slowworker", "attacker-serve", "slow-worker", "--service", "attack.big"),
                 ("slowclient", "attacker-call", "slow-client", "--service", "attack.big")],
        "targeted": [("busyworker", "attacker-serve", "busy-worker", "--service", "attack.busy",
                      "--id", "atk-busy"),
                     ("targeted", "attacker-call", "targeted", "--service", "attack.busy",
                      "--target", "atk-busy", "--ids", ids)],
        "spread": [("wildworker", "attacker-serve", "wild-worker", "--service", "attack.*"),
                   ("spread", "attacker-call", "spread", "--service", "attack.n")],
        "dir": [("dir", "attacker-call", "dir")],
        "handshake": [("handshake", None, "handshake", "--count", "200")],
        "idle": [("idle", None, "idle", "--count", str(IDLE))],
    }
    phases = []                 # (name, t0, t1, t_settled, notes, attacker stats)

    def run_phase(name, plan):
        notes, stats = [], {}
        attackers = []
        for step in plan:
            attackers.append(attacker(*step))
            if step[0].endswith("worker"):
                time.sleep(0.5)                 # READY before the requests
        aborted = threading.Event()

        def over_safety():
            aborted.set()
        sampler.on_over_safety = over_safety
        t0 = time.monotonic()
        while time.monotonic() - t0 < PHASE and not aborted.is_set() and broker.poll() is None:
            time.sleep(0.05)
        t1 = time.monotonic()
        sampler.on_over_safety = None
        if aborted.is_set():
            notes.append("stopped at %.1f s: broker RSS over the %d MiB safety limit"
                         % (t1 - t0, SAFETY_KB // 1024))
        for p in reversed(attackers):       # clients before their workers
            if p.poll() is not None:
                notes.append("%s exited early (%s)" % (p.name, p.returncode))
            stop(p)
            try:
                with open(os.path.join(WORK, p.name + ".stats")) as f:
                    stats[p.name] = dict(kv.split("=") for kv in f.read().split())
            except OSError:
                stats[p.name] = {}
        settle_end = time.monotonic() + SETTLE
        while time.monotonic() < settle_end and broker.poll() is None:
            time.sleep(0.05)
        phases.append((name, t0, t1, time.monotonic(), notes, stats))
        if broker.poll() is not None:
            return False
        return True

    crashed = False
    techniques = [t for t in TECHNIQUES if not ONLY or t in ONLY]
    for name, plan in [("quiet", [])] + [(t, plans[t]) for t in techniques] + [("quiet-end", [])]:
        sys.stdout.write("# phase %s ...\n" % name)
        sys.stdout.flush()
        if not run_phase(name, plan):
            crashed = True
            break

    # The victims stop; their requests in flight end within their timeout
    probe.running = False
    probe.join(VICTIM_TIMEOUT / 1000 + 10)
    stop(victim, VICTIM_TIMEOUT / 1000 + 5)
    stop(worker)
    if broker.poll() is None:
        stop(broker, 10)
        crashed = crashed or broker.returncode not in (0, -signal.SIGTERM)
    else:
        crashed = True
    with open(broker.log) as f:
        broker_log = f.read()
    stopped = re.findall(r"event=stopped.*", broker_log)

    # Per phase: the victims' requests sent in it
    recs = []
    with open(records) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                recs.append((int(parts[0]) / 1e6, int(parts[1]), parts[2]))
    rows = []
    for name, t0, t1, t2, notes, stats in phases:
        mine = [r for r in recs if t0 <= r[0] < t1]
        ok = sorted(r[1] for r in mine if r[2] == "ok")
        lost = sum(1 for r in mine if r[2] in ("timeout", "lost"))
        errors = {}
        for r in mine:
            if r[2].startswith("error"):
                errors[r[2]] = errors.get(r[2], 0) + 1
        wrong = sum(1 for r in mine if r[2] == "wrong")
        window = sampler.window(t0, t1)
        after = sampler.window(t1, t2)
        cpu = ((window[-1][2] - window[0][2]) / (window[-1][0] - window[0][0]) * 100
               if len(window) > 1 else 0)
        leaked = sum(int(s.get("leaked", 0)) for s in stats.values())
        fresh = [p for p in probe.results if t0 <= p[0] < t1]
        rows.append(dict(name=name, seconds=t1 - t0, sent=len(mine), ok=len(ok),
                         rps=len(ok) / (t1 - t0) if t1 > t0 else 0,
                         p50=percentile(ok, 0.5), p99=percentile(ok, 0.99), lost=lost,
                         failed=sum(errors.values()), errors=errors, wrong=wrong,
                         leaked=leaked,
                         rss_peak=max((s[1] for s in window + after), default=0),
                         rss_after=after[-1][1] if after else None, cpu=cpu, notes=notes,
                         fresh="%d/%d" % (sum(1 for p in fresh if p[1]), len(fresh)),
                         fresh_max=max((p[2] for p in fresh), default=0),
                         stats=stats))
    between = [r for r in recs if not any(t0 <= r[0] < t1 for _, t0, t1, *_ in phases)]
    # The baseline: the two quiet phases together (first and last), so
    # that one noisy second on a shared machine does not make it
    quiet = sorted(r[1] for _, t0, t1, *_ in phases[:1] + phases[-1:]
                   for r in recs if t0 <= r[0] < t1 and r[2] == "ok")
    base = percentile(quiet, 0.99) if phases and phases[0][0] == "quiet" else None

    def fmt_us(v):
        return "-" if v is None else ("%.1f ms" % (v / 1000) if v >= 1000 else "%d us" % v)

    print()
    print("| phase | s | victim req/s | p50 | p99 | p99/quiet | lost | failed | wrong "
          "| broker RSS peak | RSS after | broker CPU | new conn ok | new conn max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = "%.2f" % (r["p99"] / base) if base and r["p99"] else "-"
        print("| %s | %.1f | %.0f | %s | %s | %s | %d | %d | %d | %d MiB | %s | %.0f%% | %s "
              "| %.2f s |"
              % (r["name"], r["seconds"], r["rps"], fmt_us(r["p50"]), fmt_us(r["p99"]), ratio,
                 r["lost"], r["failed"], r["wrong"], r["rss_peak"] // 1024,
                 "-" if r["rss_after"] is None else "%d MiB" % (r["rss_after"] // 1024),
                 r["cpu"], r["fresh"], r["fresh_max"]))
    print()
    for r in rows:
        extra = []
        if r["errors"]:
            extra.append("victim errors: " + ", ".join("%s x%d" % kv
                                                      for kv in sorted(r["errors"].items())))
        for name, s in sorted(r["stats"].items()):
            if s:
                extra.append("%s: %s" % (name, " ".join("%s=%s" % kv for kv in sorted(s.items()))))
        extra += r["notes"]
        if extra:
            print("%s: %s" % (r["name"], "; ".join(extra)))
    with open(os.path.join(WORK, "victim.totals")) as f:
        print("victim totals: %s" % f.read().strip())
    b_lost = sum(1 for r in between if r[2] != "ok")
    print("victim requests sent while settling (in no phase): %d, %d not ok"
          % (len(between), b_lost))
    for line in stopped:
        print("broker: " + line.strip())

    # Verdicts, one per goal
    attacks = [r for r in rows if r["name"] not in ("quiet", "quiet-end")]
    print()
    if base:
        worst = max(attacks + rows[-1:], key=lambda r: (r["p99"] or 0))
        over = [r["name"] for r in rows if r["p99"] and r["p99"] > 2 * base]
        print("verdict p99 <= 2x quiet (%s, both quiet phases): %s%s" % (
            fmt_us(base), "yes" if not over else "NO",
            "" if not over else " (%s; worst %s: %.1fx)" % (", ".join(over), worst["name"],
                                                           worst["p99"] / base)))
    over = [r["name"] for r in rows if r["rss_peak"] > CEILING_KB]
    peak = max(rows, key=lambda r: r["rss_peak"]) if rows else None
    print("verdict RSS under the %s ceiling: %s (peak %d MiB in %s)%s" % (
        MAX_MEMORY, "yes" if not over else "NO", peak["rss_peak"] // 1024 if peak else 0,
        peak["name"] if peak else "-", "" if not over else "; over in " + ", ".join(over)))
    bad = [r["name"] for r in rows if r["lost"] or r["failed"]]
    fresh_bad = sum(1 for p in probe.results if not p[1])
    wrong = sum(r["wrong"] for r in rows) + sum(1 for r in between if r[2] == "wrong")
    leaked = sum(r["leaked"] for r in rows)
    print("verdict zero victim requests lost: %s%s" % (
        "yes" if not bad and not b_lost else "NO",
        "" if not bad else " (%s)" % ", ".join("%s: %d lost, %d failed" % (
            r["name"], r["lost"], r["failed"]) for r in rows if r["lost"] or r["failed"])))
    print("new connections (pigato request every second): %d of %d failed"
          % (fresh_bad, len(probe.results)))
    print("verdict zero leaked (wrong reply bodies, victim bodies seen by attackers): %s"
          " (%d wrong, %d leaked)" % ("yes" if not wrong and not leaked else "NO", wrong, leaked))
    if crashed:
        print("soak-hostile: the broker crashed or did not stop cleanly (exit %s); its log ends:\n%s"
              % (broker.returncode, broker_log[-3000:]))
    return 1 if crashed or wrong or leaked else 0


if __name__ == "__main__":
    try:
        rc = main()
    finally:
        cleanup()
    sys.exit(rc)
