#!/usr/bin/python3
"""What an operator sees of a running broker (issue 16): the Prometheus
exposition of --metrics-listen, read with python3-prometheus-client's own
parser after a known load, the $stats service under the ACL, and the
`pigato stats` and `pigato check` commands.

What is proven:
 * ScrapeTest: after N ok replies, M error replies, K denied requests, a
   timeout, a quota refusal and a lost worker, every per-service,
   per-identity and broker counter has exactly the value the load made;
   workers and their summed concurrency; latency histograms count the
   final replies; a refused handshake is counted by reason; ACL reloads
   and failed reloads are counted; names peers chose (quotes,
   backslashes, newlines, bytes that are no UTF-8) come out as labels the
   parser reads back.
 * HttpTest: GET and HEAD /metrics only (404, 405), the content type of
   format 0.0.4, a port chosen by the kernel, a bad address refused at
   start.
 * CertificateExpiryTest: seconds until the broker's and the CA's
   certificates end.
 * StatsServiceTest: $stats needs `call $stats`; it shows only services
   the caller may call and its own counts; the broker-wide part only with
   `call $stats.broker`; a body names one service.
 * CliStatsTest: `pigato stats` (table, --json) and `pigato check` exit
   0 / 1 / 2 / 3 with one line for OK, fewer workers than asked, a
   missing service, an unreachable broker, a refused key, a refused
   $stats.
"""

import json
import os
import re
import signal
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

import harness
from harness import CLI_BIN, KeyPair, MeshTestCase, secs, write_acl

LONG = '{"timeout":30000}'

POLICY = """\
identity alice  {alice}
identity quo    {quo}
identity wk     {wk}
identity ops    {ops}
identity eve    {eve}
identity nobody {nobody}

allow alice  call   echo fail slow doomed
allow quo    call   slow
allow wk     serve  *
allow ops    call   echo $stats $stats.broker
allow eve    call   $stats other
allow nobody call   echo
limit quo    pending=1
"""


def samples(text):
    """{(sample name, ((label, value), ...)): value} of an exposition,
    read by prometheus_client's parser (which raises on bad syntax)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsCase(MeshTestCase):
    """A CURVE broker with the policy above and --metrics-listen on a free
    port; identities as KeyPairs in tmp/ids."""

    CURVE = True
    START_BROKER = False
    NAMES = ("alice", "quo", "wk", "ops", "eve", "nobody")
    EXTRA = ()

    def setUp(self):
        MeshTestCase.setUp(self)
        self.keydir = os.path.join(self.tmp, "ids")
        os.mkdir(self.keydir)
        self.keys = {n: KeyPair(self.keydir, n) for n in self.NAMES}
        self.acl_path = os.path.join(self.tmp, "mesh.acl")

    def policy(self, text=POLICY):
        return text.format(**{n: k.public for n, k in self.keys.items()})

    def metrics_broker(self, text=POLICY, extra=()):
        write_acl(self.acl_path, self.policy(text))
        self.broker = self.start_broker(
            acl=self.acl_path,
            extra=["--metrics-listen", "127.0.0.1:0"] + list(self.EXTRA) + list(extra))
        m = re.search(r"metrics=(http://\S+/metrics)", self.broker.text())
        self.assertIsNotNone(m, "event=ready names no metrics address\n" + self.broker.tail())
        self.url = m.group(1)
        return self.broker

    def as_client(self, name):
        return self.client(keypair=self.keys[name])

    def as_worker(self, name, service):
        w = self.worker(keypair=self.keys[name])
        self.assertIsNotNone(w.ready(service), "READY %s not acknowledged\n%s"
                             % (service, self.broker.tail(10)))
        return w

    def scrape(self):
        with urllib.request.urlopen(self.url, timeout=secs(5)) as response:
            self.assertEqual(response.status, 200)
            return response.read().decode("utf-8")

    def metrics_when(self, done, timeout=5.0):
        """Scrapes until done(samples) holds (the broker renders at most
        every 500 ms; counters move as the broker's loop turns), pumping
        the raw peers meanwhile. Returns the last samples."""
        deadline = time.monotonic() + secs(timeout)
        while True:
            found = samples(self.scrape())
            if done(found) or time.monotonic() > deadline:
                return found
            self.mesh.pump(0.05)

    def cli(self, *args, timeout=20):
        r = subprocess.run([CLI_BIN] + list(args), capture_output=True, text=True,
                           timeout=secs(timeout))
        return r.returncode, r.stdout, r.stderr

    def cli_as(self, name, *args, timeout=20):
        return self.cli(*args, "--broker", self.broker.endpoint, "--heartbeat",
                        str(self.broker.heartbeat), "--server-key",
                        self.broker.key.public_file, "--key",
                        self.keys[name].secret_file, timeout=timeout)


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))))


class ScrapeTest(MetricsCase):

    N, M, K = 5, 3, 2

    def next_request_of(self, workers, timeout=5.0):
        """(worker, request): the first request any of workers gets."""
        deadline = time.monotonic() + secs(timeout)
        while time.monotonic() < deadline:
            for w in workers:
                req = w.next_request(0.02)
                if req is not None:
                    return w, req
        self.fail("no request reached the workers\n" + self.broker.tail(10))

    def outcome(self, found, service, outcome):
        return value(found, "pigato_service_requests_total", service=service,
                     outcome=outcome)

    def test_counters_after_a_known_load(self):
        self.metrics_broker()
        echo1 = self.as_worker("wk", "echo")
        echo2 = self.as_worker("wk", "echo")
        fail = self.as_worker("wk", "fail")
        slow = self.as_worker("wk", "slow")
        doomed = self.as_worker("wk", "doomed")
        self.as_worker("wk", "admin")
        alice = self.as_client("alice")
        quo = self.as_client("quo")

        # N ok replies, on either echo worker
        for i in range(self.N):
            alice.request("echo", "ok%d" % i, '"12345"', '{"n":1}')
            worker, req = self.next_request_of((echo1, echo2))
            worker.reply(req, '"abc"')
            _, final = alice.final("ok%d" % i, 5)
            self.assertIsNotNone(final)
            self.assertEqual(final.status, b"0")

        # M error replies
        for i in range(self.M):
            alice.request("fail", "f%d" % i, '"x"')
            req = fail.next_request(5)
            self.assertIsNotNone(req)
            fail.reply(req, '"broken"', status=-1)
            _, final = alice.final("f%d" % i, 5)
            self.assertEqual(final.status, b"-1")

        # K denied: alice may not call admin (which has a worker)
        for i in range(self.K):
            alice.request("admin", "d%d" % i, '"x"', LONG)
            _, final = alice.final("d%d" % i, 5)
            self.assertIsNotNone(final)
            self.assertIn(b"E_ACCESS_DENIED", final.data)

        # A timeout: the worker holds it past its 300 ms
        alice.request("slow", "t0", '"x"', '{"timeout":300}')
        self.assertIsNotNone(slow.next_request(5))

        # A quota refusal: quo may hold one request at once; the one it
        # holds is then answered
        quo.request("slow", "q0", '"x"', LONG)
        held = slow.next_request(5)
        self.assertIsNotNone(held)
        quo.request("slow", "q1", '"x"', LONG)
        _, final = quo.final("q1", 5)
        self.assertIsNotNone(final)
        self.assertIn(b"E_QUOTA", final.data)
        slow.reply(held, '"late but fine"')
        self.assertEqual(quo.final("q0", 5)[1].status, b"0")

        # A lost worker: its connection closes while it holds a request
        alice.request("doomed", "w0", '"x"', LONG)
        self.assertIsNotNone(doomed.next_request(5))
        doomed.close()
        _, final = alice.final("w0", 10)
        self.assertIsNotNone(final)
        self.assertIn(b"E_WORKER_LOST", final.data)

        # A handshake with a key the policy does not hold
        stranger = self.client()
        stranger.send("C", "4")

        found = self.metrics_when(
            lambda f: self.outcome(f, "slow", "timeout") == 1
            and (value(f, "pigato_handshakes_refused_total", reason="unknown_key") or 0) >= 1)

        self.assertEqual(self.outcome(found, "echo", "ok"), self.N)
        self.assertEqual(self.outcome(found, "fail", "error"), self.M)
        self.assertEqual(self.outcome(found, "admin", "denied"), self.K)
        self.assertEqual(self.outcome(found, "slow", "timeout"), 1)
        self.assertEqual(self.outcome(found, "slow", "quota"), 1)
        self.assertEqual(self.outcome(found, "slow", "ok"), 1)
        self.assertEqual(self.outcome(found, "doomed", "worker_lost"), 1)
        # every other outcome of every service is 0
        expected = {("echo", "ok"): self.N, ("fail", "error"): self.M,
                    ("admin", "denied"): self.K, ("slow", "timeout"): 1,
                    ("slow", "quota"): 1, ("slow", "ok"): 1,
                    ("doomed", "worker_lost"): 1}
        for (name, labels), v in found.items():
            if name == "pigato_service_requests_total":
                labels = dict(labels)
                self.assertEqual(v, expected.get((labels["service"], labels["outcome"]), 0),
                                 "pigato_service_requests_total%r" % labels)

        # Latency: every final reply is counted, none of the others
        hist = "pigato_service_request_duration_seconds"
        self.assertEqual(value(found, hist + "_count", service="echo"), self.N)
        self.assertEqual(value(found, hist + "_bucket", service="echo", le="+Inf"), self.N)
        self.assertEqual(value(found, hist + "_count", service="fail"), self.M)
        self.assertEqual(value(found, hist + "_count", service="slow"), 1)
        self.assertEqual(value(found, hist + "_count", service="admin"), 0)
        self.assertGreater(value(found, hist + "_sum", service="echo"), 0)
        self.assertLess(value(found, hist + "_sum", service="echo"), 5 * self.N)
        buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in found.items()
                         if n == hist + "_bucket" and dict(l)["service"] == "echo")
        self.assertEqual(len(buckets), 19)
        self.assertEqual([v for _, v in buckets], sorted(v for _, v in buckets),
                         "buckets must be cumulative")

        # Bytes: bodies and opts in, bodies out
        self.assertEqual(value(found, "pigato_service_request_bytes_total", service="echo"),
                         self.N * (len('"12345"') + len('{"n":1}')))
        self.assertEqual(value(found, "pigato_service_reply_bytes_total", service="echo"),
                         self.N * len('"abc"'))

        # Workers now
        self.assertEqual(value(found, "pigato_service_workers", service="echo"), 2)
        self.assertEqual(value(found, "pigato_service_concurrency", service="echo"), 200)
        self.assertEqual(value(found, "pigato_service_workers", service="doomed"), 0)
        self.assertEqual(value(found, "pigato_service_in_flight", service="echo"), 0)
        self.assertEqual(value(found, "pigato_service_queued", service="echo"), 0)
        self.assertEqual(value(found, "pigato_workers"), 5)   # doomed is gone

        # Per identity: requests that reached admission, denials, quota
        ident = "pigato_identity_requests_total"
        self.assertEqual(value(found, ident, identity="alice"), self.N + self.M + 2)
        self.assertEqual(value(found, ident, identity="quo"), 2)
        self.assertEqual(value(found, "pigato_identity_denials_total", identity="alice"),
                         self.K)
        self.assertEqual(value(found, "pigato_identity_quota_refusals_total",
                               identity="quo"), 1)
        self.assertEqual(value(found, "pigato_identity_quota_refusals_total",
                               identity="alice"), 0)

        # The broker's own
        self.assertEqual(value(found, "pigato_denied_total"), self.K)
        self.assertEqual(value(found, "pigato_over_quota_total"), 1)
        self.assertEqual(value(found, "pigato_timeouts_total"), 1)
        self.assertGreaterEqual(value(found, "pigato_handshakes_accepted_total"), 8)
        self.assertEqual(value(found, "pigato_handshakes_refused_total",
                               reason="null_mechanism"), 0)
        self.assertEqual(value(found, "pigato_requests_pending"), 0)
        self.assertEqual(value(found, "pigato_bad_messages_total"), 0)
        self.assertGreater(value(found, "pigato_resident_memory_bytes"), 1 << 20)
        self.assertGreaterEqual(value(found, "pigato_connections"), 7)
        self.assertGreaterEqual(value(found, "pigato_connections_accepted_total"),
                                value(found, "pigato_connections"))
        self.assertEqual(value(found, "pigato_build_info", version="0.1.0"), 1)
        self.assertLessEqual(abs(value(found, "pigato_start_time_seconds") - time.time()), 120)

    def test_acl_reloads_and_failures_are_counted(self):
        self.metrics_broker()
        found = samples(self.scrape())
        self.assertEqual(value(found, "pigato_acl_reloads_total"), 0)
        self.assertEqual(value(found, "pigato_acl_reload_failures_total"), 0)
        loaded = value(found, "pigato_acl_loaded_timestamp_seconds")
        self.assertLessEqual(abs(loaded - time.time()), 120)
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assertIsNotNone(self.wait_log(r"event=acl_reloaded", 5, mark))
        with open(self.acl_path, "a") as f:
            f.write("allow nobody frobnicate echo\n")
        mark = self.broker.mark()
        os.kill(self.broker.pid, signal.SIGHUP)
        self.assertIsNotNone(self.wait_log(r"event=acl_reload_failed", 5, mark))
        found = self.metrics_when(lambda f: value(f, "pigato_acl_reload_failures_total") == 1)
        self.assertEqual(value(found, "pigato_acl_reloads_total"), 1)
        self.assertEqual(value(found, "pigato_acl_reload_failures_total"), 1)
        self.assertGreaterEqual(value(found, "pigato_acl_loaded_timestamp_seconds"), loaded)

    def test_names_peers_chose_are_labels_the_parser_reads_back(self):
        self.metrics_broker()
        odd = b'say "hi"\\now\nthen'
        latin1 = b"caf\xe9"
        self.as_worker("wk", odd)
        self.as_worker("wk", latin1)
        text = self.scrape()
        found = samples(text)       # raises on a malformed line
        self.assertEqual(value(found, "pigato_service_workers",
                               service=odd.decode()), 1)
        # Bytes that are no UTF-8 are shown as text, not dropped
        self.assertEqual(value(found, "pigato_service_workers", service="caf\\xe9"), 1)
        for line in text.splitlines():
            self.assertNotIn("\r", line)


class HttpTest(MetricsCase):

    def request(self, method, path):
        url = self.url.rsplit("/", 1)[0] + path
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method),
                                        timeout=secs(5)) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def test_get_and_head_of_metrics_only(self):
        self.metrics_broker()
        status, headers, body = self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        self.assertIn(b"# TYPE pigato_service_requests_total counter", body)
        status, headers, body = self.request("HEAD", "/metrics")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(self.request("GET", "/")[0], 404)
        self.assertEqual(self.request("GET", "/metrics/../x")[0], 404)
        status, headers, _ = self.request("POST", "/metrics")
        self.assertEqual(status, 405)
        self.assertEqual(headers.get("Allow"), "GET, HEAD")
        self.assertEqual(self.request("DELETE", "/metrics")[0], 405)
        # Still serving
        self.assertEqual(self.request("GET", "/metrics")[0], 200)

    def test_bad_or_taken_address_is_refused_at_start(self):
        port = harness.free_port()
        for address, word in (("127.0.0.1", "HOST:PORT"), ("127.0.0.1:99999", "HOST:PORT"),
                              ("no-such-host.invalid:9464", "no-such-host")):
            p = self.start([harness.BROKER_BIN, "--insecure", "--bind",
                            "tcp://127.0.0.1:%d" % port, "--metrics-listen", address])
            self.assertEqual(p.wait(10), 64, address + "\n" + p.tail())
            self.assertIn(word, p.text())
        self.metrics_broker()
        taken = self.url.split("//")[1].split("/")[0]
        p = self.start([harness.BROKER_BIN, "--insecure", "--bind",
                        "tcp://127.0.0.1:%d" % port, "--metrics-listen", taken])
        self.assertEqual(p.wait(10), 1, p.tail())
        self.assertIn("cannot listen", p.text())


class StatsServiceTest(MetricsCase):

    def stats(self, client, rid, body='""'):
        client.request("$stats", rid, body, LONG)
        _, final = client.final(rid, 5)
        self.assertIsNotNone(final, "no answer to $stats\n" + self.broker.tail(10))
        return final

    def test_stats_shows_what_the_caller_may_call(self):
        self.metrics_broker()
        echo = self.as_worker("wk", "echo")
        self.as_worker("wk", "other")
        alice = self.as_client("alice")
        alice.request("echo", "r1", '"x"')
        echo.reply(echo.next_request(5), '"y"')
        self.assertEqual(alice.final("r1", 5)[1].status, b"0")

        # ops: every service it may call, and the broker's part (with
        # the names no worker registered, counted together)
        answer = json.loads(self.stats(self.as_client("ops"), "s1").data)
        self.assertEqual(set(answer["services"]), {"echo", "$other"})
        self.assertEqual(answer["services"]["echo"]["requests"]["ok"], 1)
        self.assertEqual(answer["services"]["echo"]["workers"], 1)
        self.assertEqual(answer["identity"]["name"], "ops")
        broker = answer["broker"]
        # echo (this $stats is counted once answered)
        self.assertEqual(broker["counters"]["requests"], 1)
        self.assertEqual(broker["identities"]["alice"]["requests"], 1)
        self.assertEqual(len(answer["latency_bounds_seconds"]) + 1,
                         len(answer["services"]["echo"]["latency"]["buckets"]))

        # eve: only "other", her own counts, no broker part, nothing of echo
        eve = self.as_client("eve")
        answer = json.loads(self.stats(eve, "s2").data)
        self.assertEqual(set(answer["services"]), {"other"})
        self.assertNotIn("broker", answer)
        self.assertEqual(answer["identity"]["name"], "eve")
        self.assertNotIn(b"alice", self.stats(eve, "s3").data)
        # naming a service she may not call is as naming none that exists
        self.assertEqual(json.loads(self.stats(eve, "s4", '"echo"').data)["services"], {})
        self.assertEqual(set(json.loads(self.stats(eve, "s5", '"other"').data)["services"]),
                         {"other"})

        # alice may not call $stats at all
        final = self.stats(alice, "s6")
        self.assertEqual(final.status, b"-1")
        self.assertIn(b"E_ACCESS_DENIED", final.data)


    def test_queued_and_in_flight_now(self):
        self.metrics_broker(POLICY + "allow ops call busy gone\n")
        busy = self.as_worker("wk", "busy")
        gone = self.as_worker("wk", "gone")
        gone.disconnect()
        self.assertIsNotNone(self.wait_log(r"event=worker_gone .*service=gone"))
        ops = self.as_client("ops")
        ops.request("busy", "b1", '"x"', LONG)
        held = busy.next_request(5)
        self.assertIsNotNone(held)
        ops.request("gone", "g1", '"x"', LONG)    # nobody serves it now: queued
        ops.request("gone", "g2", '"x"', LONG)
        answer = json.loads(self.stats(ops, "s1").data)["services"]
        self.assertEqual((answer["busy"]["in_flight"], answer["busy"]["queued"]), (1, 0))
        self.assertEqual((answer["gone"]["workers"], answer["gone"]["queued"]), (0, 2))
        busy.reply(held, '"done"')
        self.assertEqual(ops.final("b1", 5)[1].status, b"0")
        answer = json.loads(self.stats(ops, "s2").data)["services"]
        self.assertEqual(answer["busy"]["in_flight"], 0)
        self.assertEqual(answer["busy"]["requests"]["ok"], 1)


class DurableStoreTest(MetricsCase):
    """With --store, the durable store's series: what was stored, parked
    for want of a worker, attempted and replied, the commits and the
    fdatasyncs behind them, and whether the store still takes writes."""

    def test_store_series_follow_durable_requests(self):
        store = os.path.join(self.tmp, "store")
        self.metrics_broker(POLICY + "allow alice call titanic.*\n",
                            extra=["--store", store])
        for index in range(3):
            rc, out, err = self.cli_as("alice", "submit", "echo", '"d%d"' % index)
            self.assertEqual(rc, 0, err)
        found = self.metrics_when(
            lambda f: value(f, "pigato_titanic_submitted_total") == 3)
        self.assertEqual(value(found, "pigato_titanic_submitted_total"), 3)
        self.assertEqual(value(found, "pigato_titanic_stored"), 3)
        self.assertEqual(value(found, "pigato_titanic_parked"), 3)
        self.assertEqual(value(found, "pigato_titanic_attempts_total"), 0)
        self.assertEqual(value(found, "pigato_titanic_broken"), 0)
        commits = value(found, "pigato_titanic_commits_total")
        self.assertGreaterEqual(commits, 1)
        self.assertGreaterEqual(value(found, "pigato_titanic_operations_total"), 3)
        # every commit was made durable by a sync of the sync threads
        self.assertGreaterEqual(value(found, "pigato_titanic_syncs_total"), 1)
        self.assertEqual(value(found, "pigato_titanic_sync_interval_ms"), 0)
        w = self.as_worker("wk", "echo")
        for _ in range(3):
            req = w.next_request(5)
            self.assertIsNotNone(req, self.broker.tail(10))
            w.reply(req, '"ok"')
        found = self.metrics_when(
            lambda f: value(f, "pigato_titanic_replied_total") == 3)
        self.assertEqual(value(found, "pigato_titanic_replied_total"), 3)
        self.assertEqual(value(found, "pigato_titanic_attempts_total"), 3)
        self.assertEqual(value(found, "pigato_titanic_parked"), 0)
        self.assertEqual(value(found, "pigato_titanic_in_flight"), 0)
        self.assertEqual(value(found, "pigato_titanic_stored"), 3)
        self.assertEqual(value(found, "pigato_titanic_write_failures_total"), 0)
        self.assertGreater(value(found, "pigato_titanic_commits_total"), commits)
        # $stats.broker and pigato stats show the same
        rc, out, err = self.cli_as("ops", "stats", "--json")
        self.assertEqual(rc, 0, err)
        store = json.loads(out)["broker"]["store"]
        self.assertEqual((store["submitted"], store["replied"], store["stored"],
                          store["parked"], store["broken"]), (3, 3, 3, 0, 0))
        self.assertGreaterEqual(store["syncs"], 1)
        self.assertEqual(store["sync_interval_ms"], 0)
        rc, out, err = self.cli_as("ops", "stats")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"store: 3 durable requests held \(0 at a worker, 0 "
                              r"waiting for one\), 3 stored, 3 replied, 0 expired; "
                              r"\d+ commits \(each fsync'd\), \d+ syncs, 0 write "
                              r"failures\n")
        self.assertNotIn("BROKEN", out)

    def test_a_sync_interval_is_shown(self):
        store = os.path.join(self.tmp, "store")
        self.metrics_broker(POLICY + "allow alice call titanic.*\n",
                            extra=["--store", store, "--store-sync", "200"])
        rc, out, err = self.cli_as("alice", "submit", "echo", '"d"')
        self.assertEqual(rc, 0, err)
        # Acknowledged before any sync; the sync follows within the interval
        found = self.metrics_when(
            lambda f: value(f, "pigato_titanic_syncs_total") >= 1)
        self.assertEqual(value(found, "pigato_titanic_sync_interval_ms"), 200)
        self.assertEqual(value(found, "pigato_titanic_submitted_total"), 1)
        rc, out, err = self.cli_as("ops", "stats")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"\d+ commits \(fsync'd every 200 ms\), [1-9]\d* syncs")

    def test_no_store_no_store_series(self):
        self.metrics_broker()
        found = samples(self.scrape())
        self.assertIsNone(value(found, "pigato_titanic_submitted_total"))
        self.assertIsNotNone(value(found, "pigato_workers"))
        rc, out, err = self.cli_as("ops", "stats", "--json")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("store", json.loads(out)["broker"])


class CertificateExpiryTest(MetricsCase):
    NAMES = ()

    def test_seconds_until_the_broker_and_ca_certificates_end(self):
        keygen = os.path.join(harness.BUILD, "pigato-keygen")
        ca = os.path.join(self.tmp, "ca")
        subprocess.run([keygen, "ca", "init", "-o", ca], check=True, capture_output=True)
        out = os.path.join(self.tmp, "b")
        subprocess.run([keygen, "issue", "broker", "--ca", ca, "-o", out, "--valid", "30d"],
                       check=True, capture_output=True)
        os.mkdir(os.path.join(self.tmp, "certs"))
        write_acl(self.acl_path, "trust ca/ca.crt certs/\nrevoked ca/ca.crl\n")

        class Key:
            secret_file = os.path.join(out, "broker.crt")
            public_file = os.path.join(out, "broker.key")
        self.broker = self.start_broker(acl=self.acl_path, key=Key,
                                        extra=["--metrics-listen", "127.0.0.1:0"])
        self.url = re.search(r"metrics=(http://\S+/metrics)", self.broker.text()).group(1)
        found = samples(self.scrape())
        left = value(found, "pigato_certificate_expiry_seconds", kind="broker")
        self.assertIsNotNone(left)
        self.assertLessEqual(abs(left - 30 * 86400), 3600)
        self.assertGreater(value(found, "pigato_certificate_expiry_seconds", kind="ca"),
                           left)
        self.assertIsNone(value(found, "pigato_certificate_expiry_seconds", kind="identity"))


class CliStatsTest(MetricsCase):

    def test_stats_table_and_json(self):
        self.metrics_broker()
        self.serve_echo()
        for i in range(3):
            rc, out, err = self.cli_as("nobody", "request", "echo", '"hi"', "--timeout", "5000")
            self.assertEqual(rc, 0, err)
        rc, out, err = self.cli_as("ops", "stats")
        self.assertEqual(rc, 0, err)
        header, row = out.splitlines()[0].split(), None
        self.assertEqual(header[:3], ["SERVICE", "WORKERS", "CONCURRENCY"])
        for line in out.splitlines():
            if line.startswith("echo "):
                row = line.split()
        self.assertIsNotNone(row, out)
        self.assertEqual(row[1:3], ["1", "100"])      # workers, concurrency
        self.assertEqual(row[5], "3")                  # ok
        self.assertIn("identity ops:", out)
        self.assertRegex(out, r"broker: up .* connections open")
        rc, out, err = self.cli_as("ops", "stats", "--json")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["services"]["echo"]["requests"]["ok"], 3)
        rc, out, err = self.cli_as("ops", "stats", "echo", "--json")
        self.assertEqual(set(json.loads(out)["services"]), {"echo"})
        # an identity that may not call $stats: the error reply, exit 1
        rc, out, err = self.cli_as("nobody", "stats")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("E_ACCESS_DENIED", err)

    def serve_echo(self):
        mark = self.broker.mark()
        p = self.start([CLI_BIN, "serve", "echo", "--echo", "--broker", self.broker.endpoint,
                        "--server-key", self.broker.key.public_file,
                        "--key", self.keys["wk"].secret_file])
        self.assertIsNotNone(self.broker.wait_for_log(r"event=worker_ready\b.*service=echo",
                                                      10, mark), p.tail())
        return p

    def check(self, name, *args):
        rc, out, err = self.cli_as(name, "check", *args)
        self.assertEqual(len(out.splitlines()), 1, "one line: %r" % out)
        return rc, out

    def test_check_exit_codes(self):
        self.metrics_broker()
        self.serve_echo()
        rc, out = self.check("ops")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"^OK: broker tcp://127\.0\.0\.1:\d+ answered in \d+ ms")
        rc, out = self.check("ops", "--service", "echo")
        self.assertEqual(rc, 0, out)
        self.assertIn("echo has 1 worker", out)
        rc, out = self.check("ops", "--service", "echo", "--min-workers", "2")
        self.assertEqual(rc, 1, out)
        self.assertTrue(out.startswith("WARNING: "), out)
        rc, out = self.check("ops", "--service", "missing")
        self.assertEqual(rc, 2, out)
        self.assertTrue(out.startswith("CRITICAL: "), out)
        # eve may call $stats but not echo: echo is missing for her
        rc, out = self.check("eve", "--service", "echo")
        self.assertEqual(rc, 2, out)
        # nobody may not call $stats: the broker answered, that is all
        rc, out = self.check("nobody")
        self.assertEqual(rc, 0, out)
        rc, out = self.check("nobody", "--service", "echo")
        self.assertEqual(rc, 3, out)
        self.assertTrue(out.startswith("UNKNOWN: "), out)
        # a key the broker does not know: the handshake is refused
        stranger = KeyPair(self.tmp, "stranger")
        rc, out, err = self.cli("check", "--broker", self.broker.endpoint, "--server-key",
                                self.broker.key.public_file, "--key", stranger.secret_file)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("refused the handshake", out)
        # nothing listens
        rc, out, err = self.cli("check", "--broker", "tcp://127.0.0.1:%d" % harness.free_port(),
                                "--server-key", self.broker.key.public_file,
                                "--key", self.keys["ops"].secret_file)
        self.assertEqual(rc, 2, out + err)
        self.assertTrue(out.startswith("CRITICAL: "), out)
        self.assertEqual(err, "", "check writes its one line to stdout only")
        # usage
        rc, out, err = self.cli_as("ops", "check", "--min-workers", "2")
        self.assertEqual(rc, 64, err)


if __name__ == "__main__":
    unittest.main()
