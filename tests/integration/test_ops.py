#!/usr/bin/python3
"""Running the broker as an operator does (issue 16): the configuration
file (--config, --check-config), the logs (connections opened and closed,
--log-format json), systemd's notifications (READY, RELOADING, STOPPING
on $NOTIFY_SOCKET, as sd_notify sends them), the key file layout of a
service (root:GROUP 0640) and the systemd units (systemd-analyze verify
and security on a root made for it)."""

import grp
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import zmq
from zmq.utils import z85

import harness
from harness import BROKER_BIN, BUILD, CLI_BIN, REPO, KeyPair, MeshTestCase, Proc, secs

UNITS = os.path.join(REPO, "packaging", "systemd")


def fingerprint(public_z85):
    """The broker's key fingerprint: BLAKE2b-256 of the key, 8 bytes hex."""
    raw = z85.decode(harness.b(public_z85))
    return hashlib.blake2b(raw, digest_size=32).digest()[:8].hex()


def check_config(*args):
    """pigato-broker ... --check-config: (exit code, stdout, stderr)."""
    r = subprocess.run([BROKER_BIN] + list(args) + ["--check-config"],
                       capture_output=True, text=True, timeout=secs(20))
    return r.returncode, r.stdout, r.stderr


class OpsTestCase(MeshTestCase):
    START_BROKER = False

    def write(self, name, text, mode=0o644):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def run_broker(self, *args, env=None, ready=True):
        """pigato-broker with exactly these arguments (no harness
        defaults), tracked for tearDown."""
        p = Proc([BROKER_BIN] + [str(a) for a in args], name="broker", env=env)
        self.procs.append(p)
        self.brokers.append(p)
        if ready and not p.wait_for_log(r'event.{0,3}ready', timeout=10):
            self.fail("broker not ready\n" + p.tail())
        return p


class ConfigFileTest(OpsTestCase):

    def test_settings_come_from_the_file_and_the_command_line_overrides_them(self):
        key = KeyPair(self.tmp, "broker")
        file_port, port = harness.free_port(), harness.free_port()
        conf = self.write("broker.conf", """\
# the broker of this test
bind            tcp://127.0.0.1:%d      # replaced by --bind below
allow-any
key             %s
max-connections 100
heartbeat       "500"
log-level       debug
""" % (file_port, key.secret_file))
        br = self.run_broker("--config", conf, "--bind", "tcp://127.0.0.1:%d" % port,
                         "--max-connections", "200")
        m = br.wait_for_log(r"event=ready .*\bfingerprint=(\w+) .*max_connections=(\d+) "
                            r".*endpoints=(\S+)", timeout=0)
        self.assertIsNotNone(m, br.tail())
        self.assertEqual(m.group(1), fingerprint(key.public))
        self.assertEqual(m.group(2), "200")
        self.assertEqual(m.group(3), "tcp://127.0.0.1:%d" % port)
        # The file's CURVE settings are in force on the command line's bind
        # $dir: the broker itself answers
        rc, out, err = self.cli("request", "$dir", '"x"', "--broker",
                                "tcp://127.0.0.1:%d" % port, "--server-key",
                                key.public_file)
        self.assertEqual((rc, out), (0, "[]"), err)
        self.assertIsNotNone(br.wait_for_log(r"event=connection_open .*identity=anonymous",
                                             timeout=5))

    def test_check_config_names_every_mistake_by_file_and_line(self):
        conf = self.write("broker.conf", """\
bind tcp://127.0.0.1:5555
heartbeat abc
--acl mesh.acl
dmode=rand
no-such-thing 1
allow-any maybe
bind 127.0.0.1:5556
log-format yaml
log-level
heartbeat 100
check-config
""")
        rc, out, err = check_config("--config", conf)
        self.assertEqual(rc, 1, err)
        self.assertEqual(out, "")
        expected = {
            2: "--heartbeat needs a number >= 10, not 'abc'",
            3: "write the name without dashes ('acl', not '--acl')",
            4: "write 'name value', not 'name=value' ('dmode')",
            5: "unknown setting 'no-such-thing'",
            6: "'allow-any' is a flag: the name alone, or 'allow-any yes' or "
               "'allow-any no', not 'maybe'",
            7: "endpoint '127.0.0.1:5556' has no transport (did you mean "
               "tcp://127.0.0.1:5556?)",
            8: "unknown log format 'yaml' (expected text or json)",
            9: "'log-level' needs a value",
            10: "'heartbeat' is set again (line 2 set it first)",
            11: "'check-config' belongs on the command line, not in a "
                "configuration file",
        }
        for line, message in expected.items():
            self.assertIn("%s:%d: %s\n" % (conf, line, message), err)
        # A second bind is allowed
        self.assertNotIn("'bind' is set again", err)
        # Started with it, the broker refuses as a usage error
        r = subprocess.run([BROKER_BIN, "--config", conf], capture_output=True,
                           text=True, timeout=secs(20))
        self.assertEqual(r.returncode, 64, r.stderr)
        self.assertIn("%s:3: write the name without dashes" % conf, r.stderr)

    def test_check_config_loads_the_acl_and_the_key_and_binds_nothing(self):
        key = KeyPair(self.tmp, "broker")
        port = harness.free_port()
        acl = self.write("mesh.acl", "allow * call echo\n")
        conf = self.write("broker.conf", "bind tcp://127.0.0.1:%d\nacl %s\nkey %s\n"
                          % (port, acl, key.secret_file))
        rc, out, err = check_config("--config", conf)
        self.assertEqual((rc, out, err), (0, conf + ": OK\n", ""))
        # A running broker on the same endpoint: the check does not bind
        self.run_broker("--config", conf)
        self.assertEqual(check_config("--config", conf)[:2], (0, conf + ": OK\n"))
        # A broken ACL and a key that group and others may read: both said,
        # each at the line that names the file
        self.write("mesh.acl", "allow * serv echo\n")
        os.chmod(key.secret_file, 0o644)
        rc, out, err = check_config("--config", conf)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, r"%s:2: %s:1: .*unknown verb 'serv'" % (re.escape(conf),
                                                                   re.escape(acl)))
        self.assertIn("%s:3: secret key file '%s' is readable by group or others"
                      % (conf, key.secret_file), err)
        # What concerns the options together is said of the file
        conf2 = self.write("other.conf", "bind tcp://127.0.0.1:%d\n" % port)
        rc, out, err = check_config("--config", conf2)
        self.assertEqual(rc, 1)
        self.assertIn("%s: no security mode" % conf2, err)
        # Without --config, the command line is checked
        rc, out, err = check_config("--insecure")
        self.assertEqual((rc, out), (0, "pigato-broker: OK\n"), err)

    def test_a_file_others_may_write_is_refused(self):
        conf = self.write("broker.conf", "insecure\n", mode=0o666)
        rc, out, err = check_config("--config", conf)
        self.assertEqual(rc, 1)
        self.assertIn("%s: writable by others (mode 0666): fix with: chmod o-w %s"
                      % (conf, conf), err)
        rc, _, err = check_config("--config", os.path.join(self.tmp, "absent.conf"))
        self.assertEqual(rc, 1)
        self.assertIn("absent.conf: cannot read: No such file or directory", err)


class LogTest(OpsTestCase):

    def test_connections_opened_and_closed_with_identity_and_fingerprint(self):
        key = KeyPair(self.tmp, "broker")
        web = KeyPair(self.tmp, "web")
        acl = self.write("mesh.acl", "identity web %s\nallow web call $dir\n" % web.public)
        port = harness.free_port()
        br = self.run_broker("--acl", acl, "--key", key.secret_file, "--bind",
                         "tcp://127.0.0.1:%d" % port)
        rc, out, err = self.cli("request", "$dir", '"x"', "--broker",
                                "tcp://127.0.0.1:%d" % port, "--server-key",
                                key.public_file, "--key", web.secret_file)
        self.assertEqual((rc, out), (0, "[]"), err)
        fp = fingerprint(web.public)
        opened = br.wait_for_log(r"event=connection_open address=127\.0\.0\.1:(\d+) "
                                 r"identity=web key=%s fd=(\d+)$" % fp, timeout=5)
        self.assertIsNotNone(opened, br.tail())
        closed = br.wait_for_log(
            r"event=connection_closed address=127\.0\.0\.1:%s identity=web key=%s fd=%s "
            r"seconds=\d+\.\d{3} bytes_in=[1-9]\d* bytes_out=\d+$"
            % (opened.group(1), fp, opened.group(2)), timeout=5)
        self.assertIsNotNone(closed, br.tail())
        # The full key is in the ready line only; everywhere else a fingerprint
        text = br.text()
        self.assertEqual(text.count(key.public), 1)
        self.assertNotIn(web.public, text)

    def test_opening_lines_are_rate_limited_and_closing_lines_follow_them(self):
        port = harness.free_port()
        br = self.run_broker("--insecure", "--bind", "tcp://127.0.0.1:%d" % port)
        endpoint = "tcp://127.0.0.1:%d" % port
        peers = [harness.RawClient(self.mesh, endpoint) for _ in range(300)]
        for p in peers:
            p.send("C", "4")
        deadline = time.monotonic() + secs(20)
        while time.monotonic() < deadline:
            opened = br.count(r"event=connection_open ")
            held = sum(int(m) for m in re.findall(
                r"event=connection_open_suppressed count=(\d+)", br.text()))
            if opened + held == 300:
                break
            self.mesh.pump(0.05)
        self.assertEqual(opened + held, 300, br.tail())
        # At most 100 a second (the limiter's seconds are the monotonic
        # clock's, the lines' the wall clock's: 200 in one of these)
        seconds = {}
        for line in br.text().splitlines():
            if "event=connection_open " in line:
                seconds[line[:19]] = seconds.get(line[:19], 0) + 1
        self.assertLessEqual(max(seconds.values()), 200, seconds)
        if held == 0:   # a slow machine: 300 connections over 3 s or more
            self.assertGreaterEqual(len(seconds), 3, seconds)
        for p in peers:
            p.close()
        self.mesh.peers = []
        deadline = time.monotonic() + secs(20)
        while br.count(r"event=connection_closed ") < opened and time.monotonic() < deadline:
            br.wait_for_log(r"event=connection_closed ", 0.2, since=br.mark())
        self.assertEqual(br.count(r"event=connection_closed "), opened, br.tail())

    def test_json_format_every_line_one_object(self):
        key = KeyPair(self.tmp, "broker")
        port = harness.free_port()
        br = self.run_broker("--allow-any", "--key", key.secret_file, "--bind",
                         "tcp://127.0.0.1:%d" % port, "--log-format", "json")
        client = KeyPair(self.tmp, "client")
        rc, out, err = self.cli("request", "$dir", '"x"', "--broker",
                                "tcp://127.0.0.1:%d" % port, "--server-key",
                                key.public_file, "--key", client.secret_file,
                                "-v", "--log-format", "json")
        self.assertEqual((rc, out), (0, "[]"), err)
        self.assertIsNotNone(br.wait_for_log(r'"event":"connection_closed"', timeout=5),
                             br.tail())
        br.stop(signal.SIGTERM)
        objects = [json.loads(line) for line in br.text().splitlines()]
        events = [o["event"] for o in objects]
        for o in objects:
            self.assertEqual(list(o)[:3], ["ts", "level", "event"])
            self.assertRegex(o["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertIn("stopped", events)
        ready = objects[events.index("ready")]
        self.assertEqual((ready["key"], ready["fingerprint"], ready["endpoints"]),
                         (key.public, fingerprint(key.public),
                          "tcp://127.0.0.1:%d" % port))
        opened = objects[events.index("connection_open")]
        self.assertEqual((opened["level"], opened["identity"], opened["key"]),
                         ("info", "anonymous", fingerprint(client.public)))
        # The command line's lines too (its failure message is not a log line)
        lines = [l for l in err.splitlines() if l.startswith("{")]
        self.assertTrue(lines, err)
        for line in lines:
            self.assertIn("event", json.loads(line))


def linked_with_systemd():
    r = subprocess.run(["ldd", BROKER_BIN], capture_output=True, text=True)
    return "libsystemd" in r.stdout


@unittest.skipUnless(linked_with_systemd(), "pigato-broker was built without libsystemd "
                     "(apt-get install libsystemd-dev, or make SYSTEMD=0 was given)")
class NotifyTest(OpsTestCase):
    """What systemd hears from a Type=notify broker: the datagrams
    sd_notify sends to $NOTIFY_SOCKET."""

    def test_ready_reloading_ready_stopping(self):
        path = os.path.join(self.tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(secs(10))
        self.addCleanup(sock.close)
        acl = self.write("mesh.acl", "allow * call *\n")
        port = harness.free_port()
        br = self.run_broker("--insecure", "--acl", acl, "--bind", "tcp://127.0.0.1:%d" % port,
                         env={"NOTIFY_SOCKET": path}, ready=False)

        def message():
            fields = dict(line.split("=", 1) for line in
                          sock.recv(4096).decode().split("\n"))
            return fields
        ready = message()
        self.assertEqual(ready, {"READY": "1",
                                 "STATUS": "serving on tcp://127.0.0.1:%d" % port})
        # Sent once bound, after event=ready: what waits for it can connect
        self.assertIsNotNone(br.wait_for_log(r"event=ready", timeout=5))
        before = time.monotonic()
        br.send_signal(signal.SIGHUP)
        reloading = message()
        self.assertEqual((reloading["RELOADING"], reloading["STATUS"]), ("1", "reloading"))
        # CLOCK_MONOTONIC, as systemd 253 wants it, in microseconds
        when = int(reloading["MONOTONIC_USEC"]) / 1e6
        self.assertTrue(before - 1 <= when <= time.monotonic() + 1,
                        (before, when, time.monotonic()))
        self.assertEqual(message(), ready)
        self.assertIsNotNone(br.wait_for_log(r"event=acl_reloaded", timeout=5))
        # A bad file keeps the old policy: the broker serves on, READY again
        self.write("mesh.acl", "allow * serv *\n")
        br.send_signal(signal.SIGHUP)
        self.assertEqual(message()["RELOADING"], "1")
        self.assertEqual(message(), ready)
        br.send_signal(signal.SIGTERM)
        self.assertEqual(message(), {"STOPPING": "1", "STATUS": "stopping"})
        self.assertEqual(br.wait(10), 0)
        sock.settimeout(0.2)
        self.assertRaises(socket.timeout, sock.recv, 4096)

    def test_nothing_is_sent_without_notify_socket(self):
        # The broker runs the same outside systemd (no socket: no error)
        br = self.run_broker("--insecure", "--bind", "tcp://127.0.0.1:%d" % harness.free_port())
        br.send_signal(signal.SIGHUP)
        self.assertIsNotNone(br.wait_for_log(r"event=acl_reload_skipped", timeout=5))
        self.assertTrue(br.alive())


@unittest.skipUnless(os.geteuid() == 0, "needs root: key files owned by root and "
                     "another user")
class ServiceKeyLayoutTest(OpsTestCase):
    """A secret key root:GROUP 0640 is taken when the broker is in GROUP
    (the unit's Group=pigato); every other loosening is refused."""

    def check_key(self, mode, uid, gid):
        key = KeyPair(self.tmp, "broker%o-%d-%d" % (mode, uid, gid))
        os.chown(key.secret_file, uid, gid)
        os.chmod(key.secret_file, mode)
        return check_config("--allow-any", "--key", key.secret_file)

    def test_group_readable_key_owned_by_root_in_our_group(self):
        ours = os.getegid()
        other = grp.getgrnam("nogroup").gr_gid
        self.assertNotIn(other, os.getgroups() + [ours])
        self.assertEqual(self.check_key(0o640, 0, ours)[0], 0)
        self.assertEqual(self.check_key(0o440, 0, ours)[0], 0)
        for mode, uid, gid in ((0o640, 0, other),       # not our group
                               (0o660, 0, ours),        # the group may write
                               (0o644, 0, ours),        # others may read
                               (0o650, 0, ours),        # not 0640/0440
                               (0o640, 65534, ours)):   # not owned by root
            rc, _, err = self.check_key(mode, uid, gid)
            self.assertEqual(rc, 1, "mode %o uid %d gid %d" % (mode, uid, gid))
            self.assertIn("is readable by group or others (mode %04o); fix with: "
                          "chmod 600" % mode, err)
            self.assertIn(" or, for a service, root:GROUP 0640\n", err)


@unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not "
                     "installed (apt-get install systemd)")
class UnitTest(unittest.TestCase):
    """The units in packaging/systemd, checked by systemd itself against a
    root that holds systemd's own units and our programs where the units
    expect them."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="pigato-units-")
        root = cls.root = os.path.join(cls.tmp, "root")
        system = None
        for candidate in ("/usr/lib/systemd/system", "/lib/systemd/system"):
            if os.path.isdir(candidate):
                system = candidate
                break
        os.makedirs(os.path.join(root, "usr/lib/systemd"))
        shutil.copytree(system, os.path.join(root, "usr/lib/systemd/system"),
                        symlinks=True)
        os.symlink("usr/lib", os.path.join(root, "lib"))
        os.makedirs(os.path.join(root, "usr/bin"))
        os.symlink("usr/bin", os.path.join(root, "bin"))
        for program in ("pigato-broker", "pigato"):
            shutil.copy(os.path.join(BUILD, program), os.path.join(root, "usr/bin"))
        shutil.copy(shutil.which("kill"), os.path.join(root, "usr/bin/kill"))
        units = os.path.join(root, "etc/systemd/system")
        os.makedirs(units)
        shutil.copy(os.path.join(UNITS, "pigato-broker.service"), units)
        # A template is checked through an instance
        shutil.copy(os.path.join(UNITS, "pigato-serve@.service"),
                    os.path.join(units, "pigato-serve@echo.service"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def analyze(self, *args):
        return subprocess.run(["systemd-analyze"] + list(args), capture_output=True,
                              text=True, timeout=60)

    def test_verify_passes_without_a_word(self):
        for unit in ("pigato-broker.service", "pigato-serve@echo.service"):
            r = self.analyze("verify", "--root=" + self.root, "--man=no",
                             "/etc/systemd/system/" + unit)
            self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""), unit)

    def test_verify_would_see_a_mistake(self):
        # The check above can fail: an unknown directive is reported
        units = os.path.join(self.root, "etc/systemd/system")
        with open(os.path.join(UNITS, "pigato-broker.service")) as f:
            text = f.read().replace("UMask=0077", "UMaks=0077")
        with open(os.path.join(units, "typo.service"), "w") as f:
            f.write(text)
        r = self.analyze("verify", "--root=" + self.root, "--man=no",
                         "/etc/systemd/system/typo.service")
        self.assertIn("Unknown key 'UMaks'", r.stderr)

    def test_broker_unit_is_notify_and_hardened(self):
        with open(os.path.join(UNITS, "pigato-broker.service")) as f:
            text = f.read()
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "User=pigato",
                     "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                     "PrivateTmp=yes", "PrivateDevices=yes", "ReadOnlyPaths=/etc/pigato",
                     "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
                     "RestrictAddressFamilies=", "LimitNOFILE="):
            self.assertIn("\n" + line, text)
        # systemd's own measure: 0 (locked down) to 10 (exposed)
        for unit, ceiling in (("pigato-broker.service", 2.0),
                              ("pigato-serve@echo.service", 2.5)):
            r = self.analyze("security", "--offline=true", "--root=" + self.root,
                             "/etc/systemd/system/" + unit)
            m = re.search(r"Overall exposure level for %s: (\d+\.\d+)" % re.escape(unit),
                          r.stdout)
            self.assertIsNotNone(m, r.stdout + r.stderr)
            self.assertLessEqual(float(m.group(1)), ceiling, r.stdout)


if __name__ == "__main__":
    harness.main()
