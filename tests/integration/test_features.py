#!/usr/bin/python3
"""pigato features the broker resolves itself (issue 6): wildcard services,
versioned services with semver ranges, the $dir directory, MMI
(mmi.service), and requests that name a worker (opts workerId). Raw
pigato 0.0.46 peers from pyzmq over a real broker, insecure and CURVE; the
ACL checks the name a client asked for."""

import json
import os
import unittest

import harness
from harness import KeyPair, MeshTestCase, write_acl

LONG = '{"timeout":10000}'


class Features:

    def call(self, client, service, rid, data='"x"', opts=LONG):
        client.request(service, rid, data, opts)
        _, final = client.final(rid, 5)
        self.assertIsNotNone(final, "no reply to %s %s\n%s" % (service, rid, self.broker.tail()))
        return final

    def serve_one(self, worker, reply=None):
        req = worker.next_request(3)
        self.assertIsNotNone(req, self.broker.tail())
        worker.reply(req, reply if reply is not None else req.data)
        return req

    # -- wildcards -----------------------------------------------------------

    def test_wildcard_serves_names_without_an_exact_worker(self):
        wide, narrow = self.ready_worker("f*"), self.ready_worker("foo*")
        c = self.client()
        c.request("foobar", "w1", '"a"', LONG)
        req = narrow.next_request(3)
        self.assertIsNotNone(req, "foobar did not reach the longest prefix foo*\n"
                             + self.broker.tail())
        self.assertEqual(req.service, b"foobar", "worker not told the requested name")
        narrow.reply(req, '"n"')
        self.assertEqual(c.final("w1")[1].data, b'"n"')
        c.request("fab", "w2", '"b"', LONG)
        req = wide.next_request(3)
        self.assertEqual(req.service, b"fab")
        self.assertEqual(narrow.requests_now(0.1), [])

    def test_exact_worker_wins_even_when_it_comes_later(self):
        wild = self.ready_worker("svc*")
        c = self.client()
        c.request("svc.a", "e1", '"1"', LONG)
        self.serve_one(wild)
        exact = self.ready_worker("svc.a")
        for i in range(3):
            c.request("svc.a", "e%d" % (i + 2), '"x"', LONG)
        got = [exact.next_request(3) for _ in range(3)]
        self.assertNotIn(None, got, self.broker.tail())
        self.assertEqual(wild.requests_now(0.2), [], "the wildcard got a request "
                         "that has an exact worker")
        # requests waiting for a name with no worker go to a wildcard that appears
        c.request("later.x", "l1", '"y"', LONG)
        self.assertEqual(exact.requests_now(0.2), [])
        late = self.ready_worker("later*")
        self.assertEqual(late.next_request(3).rid, b"l1")

    def test_waiting_names_nobody_serves_are_served_when_a_server_comes(self):
        # Requests for 300 names nobody serves wait while a wildcard keeps
        # serving its own names (the broker stops looking at the waiting
        # names after the first look); each is served as soon as an exact
        # worker or a wildcard for it appears
        wild = self.ready_worker("w.*")
        c = self.client()
        for i in range(300):
            c.request("junk-%d" % i, "j%d" % i, '"q"', LONG)
        for i in range(20):
            c.request("w.%d" % i, "w%d" % i, '"a"', LONG)
            self.assertEqual(self.serve_one(wild).service, harness.b("w.%d" % i))
            self.assertIsNotNone(c.final("w%d" % i, 3)[1], self.broker.tail())
        exact = self.ready_worker("junk-7")
        req = exact.next_request(3)
        self.assertIsNotNone(req, "a waiting name was not served by its new worker\n"
                             + self.broker.tail())
        self.assertEqual(req.rid, b"j7")
        late = self.ready_worker("junk-25*")
        rids = set()
        for _ in range(11):             # junk-25 and junk-250 .. junk-259
            req = late.next_request(3)
            self.assertIsNotNone(req, "waiting names did not reach a new wildcard (%d of 11)\n%s"
                                 % (len(rids), self.broker.tail()))
            rids.add(req.rid)
            late.reply(req, '"l"')
        self.assertEqual(rids, {b"j25"} | {harness.b("j%d" % i) for i in range(250, 260)})
        self.assertEqual(late.requests_now(0.2), [], "a name the wildcard does not prefix reached it")
        self.assertEqual(wild.requests_now(0.1), [])
        self.assert_serves()

    # -- versions ------------------------------------------------------------

    def test_ranges_pick_the_highest_satisfying_version(self):
        workers = {v: self.ready_worker("calc@" + v) for v in ("1.2.3", "1.4.0", "2.0.0")}
        c = self.client()
        cases = [("calc@^1.2", "1.4.0"), ("calc@~1.2.0", "1.2.3"), ("calc@1.x", "1.4.0"),
                 ("calc@>=1.2.0 <2", "1.4.0"), ("calc@2.0.0", "2.0.0"), ("calc@*", "2.0.0"),
                 ("calc@^1.2.3 || ^2", "2.0.0")]
        for i, (name, version) in enumerate(cases):
            c.request(name, "v%d" % i, '"q"', LONG)
            req = workers[version].next_request(3)
            self.assertIsNotNone(req, "%s did not reach calc@%s\n%s"
                                 % (name, version, self.broker.tail()))
            self.assertEqual(req.service, harness.b(name))
            workers[version].reply(req, '"%s"' % version)
            self.assertEqual(c.final("v%d" % i)[1].data, harness.b('"%s"' % version))

    def test_unsatisfiable_range_waits_like_an_unknown_service(self):
        self.ready_worker("calc@1.0.0")
        c = self.client()
        c.request("calc@^3", "u1", '"q"', '{"timeout":600}')
        c.request("calc@not a range", "u2", '"q"', '{"timeout":600}')
        self.assertEqual(c.final("u1", 1), ([], None), "an unsatisfiable range got a reply")
        self.assert_broker_alive()
        three = self.ready_worker("calc@3.1.0")
        c.request("calc@^3", "u3", '"q"', LONG)
        self.assertEqual(three.next_request(3).rid, b"u3")
        self.assert_serves()

    # -- $dir and MMI ------------------------------------------------------------

    def test_directory_lists_workers(self):
        a1, a2, b1 = (self.ready_worker(s, identity=i) for s, i in
                      (("alpha", "wa1"), ("alpha", "wa2"), ("beta", "wb1")))
        c = self.client()
        one = json.loads(self.call(c, "$dir", "d1", '"alpha"').data)
        self.assertEqual(sorted(one), ["wa1", "wa2"])
        self.assertEqual(json.loads(self.call(c, "$dir", "d2", '"nobody"').data), [])
        everything = json.loads(self.call(c, "$dir", "d3", "null").data)
        self.assertEqual({k: sorted(v) for k, v in everything.items()},
                         {"alpha": ["wa1", "wa2"], "beta": ["wb1"]})
        b1.disconnect()
        self.wait_log(r"event=worker_gone\b.*worker=wb1\b", 3)
        self.assertNotIn("beta", json.loads(self.call(c, "$dir", "d4", "").data))

    def test_mmi_service(self):
        self.ready_worker("here")
        self.ready_worker("pre*")
        c = self.client()
        self.assertEqual(self.call(c, "mmi.service", "m1", '"here"').data, b"200")
        self.assertEqual(self.call(c, "mmi.service", "m2", '"gone"').data, b"404")
        self.assertEqual(self.call(c, "mmi.service", "m3", '"prefixed"').data, b"200")
        self.assertEqual(self.call(c, "mmi.other", "m4", '"here"').data, b"501")
        r = self.call(c, "$nothing", "m5")
        self.assertEqual(r.status, b"-1")
        self.assertIn(b"E_RESERVED_SERVICE", r.data)

    # -- workerId ------------------------------------------------------------

    def test_requests_naming_a_worker_go_to_it_only(self):
        w1 = self.ready_worker("echo", identity="w-one")
        w2 = self.ready_worker("echo", identity="w-two")
        c = self.client()
        for i in range(4):
            c.request("echo", "t%d" % i, '"x"', '{"workerId":"w-two","timeout":5000}')
        got = [w2.next_request(3) for _ in range(4)]
        self.assertNotIn(None, got, self.broker.tail())
        self.assertEqual(w1.requests_now(0.2), [])
        r = self.call(c, "echo", "t-unknown", '"x"', '{"workerId":"w-three"}')
        self.assertEqual(r.status, b"-1")
        self.assertIn(b"E_WORKER_NOT_FOUND", r.data)
        self.ready_worker("other", identity="w-other")
        r = self.call(c, "echo", "t-other", '"x"', '{"workerId":"w-other"}')
        self.assertIn(b"E_WORKER_NOT_FOUND", r.data)
        # queued for a busy worker that then leaves: an error, not a wait
        busy = self.ready_worker("slow", identity="w-busy", concurrency=1)
        c.request("slow", "b1", '"x"', '{"workerId":"w-busy","timeout":10000}')
        self.assertIsNotNone(busy.next_request(3))
        c.request("slow", "b2", '"x"', '{"workerId":"w-busy","timeout":10000}')
        self.assertEqual(busy.requests_now(0.2), [])
        busy.disconnect()
        _, final = c.final("b2", 3)
        self.assertIsNotNone(final, "queued request for a departed worker hung")
        self.assertIn(b"E_WORKER_NOT_FOUND", final.data)

    # -- reply cache ---------------------------------------------------------

    def test_cached_reply_answers_identical_requests_until_it_expires(self):
        w = self.ready_worker("quote")
        a, b = self.client(), self.client()
        a.request("quote", "c1", '"ibm"', LONG)
        req = w.next_request(3)
        w.reply(req, '"42.1"', opts='{"cache":1500}')
        self.assertEqual(a.final("c1")[1].data, b'"42.1"')
        # Another client, same service and body: from the cache
        final = self.call(b, "quote", "c2", '"ibm"')
        self.assertEqual((final.status, final.data), (b"0", b'"42.1"'))
        self.assertEqual(w.requests_now(0.2), [], "a cached request reached the worker")
        # A different body, or a request naming its worker: to the worker
        b.request("quote", "c3", '"aapl"', LONG)
        self.serve_one(w, '"7"')
        self.assertEqual(b.final("c3")[1].data, b'"7"')
        b.request("quote", "c4", '"ibm"', '{"workerId":"%s"}' % w.identity.decode())
        self.serve_one(w, '"fresh"')
        self.assertEqual(b.final("c4")[1].data, b'"fresh"')
        # A reply without cache opts is not cached; an error never is
        b.request("quote", "c5", '"aapl"', LONG)
        self.serve_one(w, '"8"')
        b.final("c5")
        self.mesh.settle(1.6)                   # the cached "ibm" expires
        b.request("quote", "c6", '"ibm"', LONG)
        self.assertIsNotNone(w.next_request(3), "an expired cache entry answered")

    def test_error_replies_are_not_cached(self):
        w = self.ready_worker("flaky")
        c = self.client()
        c.request("flaky", "e1", '"x"', LONG)
        req = w.next_request(3)
        w.reply(req, '"boom"', status=-1, opts='{"cache":5000}')
        self.assertEqual(c.final("e1")[1].status, b"-1")
        c.request("flaky", "e2", '"x"', LONG)
        self.assertIsNotNone(w.next_request(3), "an error reply was cached")


class FeaturesCacheBudget(MeshTestCase):
    """--cache-max-bytes: the least recently used entry goes first."""
    BROKER_EXTRA = ("--cache-max-bytes", "1500")

    def test_budget_evicts_least_recently_used(self):
        w = self.ready_worker("big")
        c = self.client()
        body = '"%s"' % ("z" * 500)
        for i in range(3):
            c.request("big", "f%d" % i, '"k%d"' % i, LONG)
            req = w.next_request(3)
            w.reply(req, body, opts='{"cache":60000}')
            c.final("f%d" % i)
        # Room for two entries of ~650 bytes: k0 was evicted by k2
        c.request("big", "g2", '"k2"', LONG)
        self.assertEqual(c.final("g2")[1].data, harness.b(body))
        self.assertEqual(w.requests_now(0.1), [])
        c.request("big", "g0", '"k0"', LONG)
        self.assertIsNotNone(w.next_request(3), "k0 should have been evicted")


class FeaturesInsecure(Features, MeshTestCase):
    CURVE = False


class FeaturesCurve(Features, MeshTestCase):
    CURVE = True


class FeaturesAcl(MeshTestCase):
    """The ACL decides on the name the client asked for."""
    CURVE = True
    START_BROKER = False

    def test_call_is_checked_on_the_name_written_and_the_version_it_reaches(self):
        keydir = os.path.join(self.tmp, "ids")
        os.mkdir(keydir)
        alice, wk = KeyPair(keydir, "alice"), KeyPair(keydir, "wk")
        carol = KeyPair(keydir, "carol")
        acl = os.path.join(self.tmp, "mesh.acl")
        write_acl(acl, "identity alice %s\nidentity wk %s\nallow wk serve *\n"
                       "allow alice call foo.open calc@^1 calc@1.*\n"
                       "identity carol %s\nallow carol call calc@^1\n"
                       % (alice.public, wk.public, carol.public))
        self.broker = self.start_broker(acl=acl)
        wild = self.worker(keypair=wk)
        self.assertIsNotNone(wild.ready("foo*"))
        calc = self.worker(keypair=wk)
        self.assertIsNotNone(calc.ready("calc@1.5.0"))
        c = self.client(keypair=alice)
        c.request("foo.open", "a1", '"x"', LONG)
        self.assertEqual(wild.next_request(3).service, b"foo.open")
        c.request("foo.secret", "a2", '"x"', LONG)
        _, final = c.final("a2", 3)
        self.assertIn(b"E_ACCESS_DENIED foo.secret", final.data)
        c.request("calc@^1", "a3", '"x"', LONG)
        self.assertIsNotNone(calc.next_request(3))
        # carol may call calc@^1 but no version of it: nothing reaches one
        self.client(keypair=carol).request("calc@^1", "c3", '"x"', LONG)
        self.assertEqual(calc.requests_now(0.3), [],
                         "carol's calc@^1 reached calc@1.5.0, which she may "
                         "not call")
        # A reply cached for alice is not served to carol, who may not call it
        c.request("foo.open", "k1", '"same"', LONG)
        req = wild.next_request(3)
        wild.reply(req, '"cached"', opts='{"cache":60000}')
        self.assertEqual(c.final("k1")[1].data, b'"cached"')
        c.request("foo.open", "k2", '"same"', LONG)
        self.assertEqual(c.final("k2")[1].data, b'"cached"')
        self.assertEqual(wild.requests_now(0.1), [])
        other = self.client(keypair=carol)
        other.request("foo.open", "k3", '"same"', LONG)
        _, final = other.final("k3", 3)
        self.assertEqual(final.status, b"-1")
        self.assertIn(b"E_ACCESS_DENIED foo.open", final.data)
        for name in ("calc@2.0.0", "$dir", "mmi.service"):
            c.request(name, "d-" + name, '"x"', LONG)
            _, final = c.final("d-" + name, 3)
            self.assertIn(b"E_ACCESS_DENIED", final.data, name)
        self.assertEqual(wild.requests_now(0.2) + calc.requests_now(0), [])


if __name__ == "__main__":
    unittest.main(verbosity=2)
