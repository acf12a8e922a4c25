#!/usr/bin/python3
"""make deb, then the packages on this machine as an operator gets them:
built with debhelper, lintian clean, installed with dpkg (the user pigato,
the broker's key root:pigato 0640, the conffiles, the library with its
soname and a pkg-config file that names no foreign include folder), the
units verified by systemd-analyze, the broker started through its unit
when systemd runs this machine (else as its unit would: as the user
pigato, with the packaged configuration, $NOTIFY_SOCKET for Type=notify),
a call made with the packaged pigato, and everything purged again: the
machine is left as it was (no package, user, group, file or folder of
ours).

Needs root, dpkg-buildpackage (debhelper, fakeroot) and lintian; skipped
when the machine already has a pigato package or a user or group pigato,
which the test could not leave as they were."""

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

import harness
from harness import BUILD, REPO, Proc, secs

PACKAGES = ["pigato-broker", "pigato-tools", "libpigato0", "libpigato-dev"]
OUT = os.path.join(BUILD, "deb")
SYSTEMD = os.path.isdir("/run/systemd/system")   # systemd is PID 1

APP = r"""
#include <pigato.h>
#include <stdio.h>
int main (void) {
    printf ("%s %s\n", pigato_version (), pigato_strerror (PIGATO_E_TIMEOUT));
    return 0;
}
"""


def run(*args, check=True, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          check=check, timeout=kw.pop("timeout", secs(120)), **kw)


def installed(package):
    r = run("dpkg-query", "-W", "-f=${Status}", package, check=False)
    return r.returncode == 0 and "installed" in r.stdout and "not-installed" not in r.stdout


def why_skip():
    if os.geteuid() != 0:
        return "needs root (dpkg -i)"
    for tool in ("dpkg-buildpackage", "dh", "fakeroot", "lintian"):
        if not shutil.which(tool):
            return "%s is missing (apt-get install debhelper fakeroot lintian)" % tool
    for package in PACKAGES:
        if run("dpkg-query", "-W", package, check=False).returncode == 0:
            return "%s is already known to dpkg: the test would not leave it as it was" \
                % package
    for db in (pwd.getpwnam, grp.getgrnam):
        try:
            db("pigato")
            return "a user or group pigato exists: the test would not leave it as it was"
        except KeyError:
            pass
    if os.path.exists("/etc/pigato"):
        return "/etc/pigato exists: the test would not leave it as it was"
    return None


@unittest.skipIf(why_skip(), why_skip())
class DebTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        r = subprocess.run(["make", "-s", "deb", "BUILD=" + BUILD], cwd=REPO,
                           capture_output=True, text=True, timeout=secs(1200))
        cls.make = r
        cls.debs = [os.path.join(OUT, "%s_0.1.0_%s.deb" % (p, cls.arch()))
                    for p in PACKAGES]

    @staticmethod
    def arch():
        return run("dpkg", "--print-architecture").stdout.strip()

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pigato-deb-")
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop(signal.SIGTERM, 5)
        if SYSTEMD and installed("pigato-broker"):
            run("systemctl", "stop", "pigato-broker", check=False)
        # Whatever happened, the machine ends as it began
        present = [p for p in PACKAGES if run("dpkg-query", "-W", p,
                                             check=False).returncode == 0]
        if present:
            run("dpkg", "--purge", *present, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_build_install_serve_purge(self):
        self.assertEqual(self.make.returncode, 0, self.make.stdout + self.make.stderr)
        # lintian ran in make deb and found nothing to report
        lint = self.make.stdout[self.make.stdout.index("deb: lintian"):]
        self.assertEqual([l for l in lint.splitlines()[1:]
                          if re.match(r"^[EWIP]: ", l)], [], lint)
        for deb in self.debs:
            self.assertTrue(os.path.exists(deb), deb)

        r = run("dpkg", "-i", *self.debs, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.check_installed()
        self.check_library()
        self.check_units()
        if SYSTEMD:
            self.serve_through_systemd()
        else:
            self.serve_as_the_unit_would()

        r = run("dpkg", "--purge", *PACKAGES, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.check_gone()

    # -- after dpkg -i ------------------------------------------------------

    def check_installed(self):
        user = pwd.getpwnam("pigato")
        self.assertLess(user.pw_uid, 1000)          # a system user
        self.assertEqual(user.pw_dir, "/nonexistent")
        self.assertIn("nologin", user.pw_shell)
        group = grp.getgrnam("pigato")
        info = os.stat("/etc/pigato/broker.key_secret")
        self.assertEqual((info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)),
                         (0, group.gr_gid, 0o640))
        self.assertEqual(stat.S_IMODE(os.stat("/etc/pigato/broker.key").st_mode), 0o644)
        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "pigato-broker").stdout
        for path in ("/etc/pigato/broker.conf", "/etc/pigato/mesh.acl"):
            self.assertIn(path, conffiles)
        for path in ("/usr/bin/pigato-broker", "/usr/bin/pigato", "/usr/bin/pigato-keygen"):
            self.assertTrue(os.access(path, os.X_OK), path)
        # The packaged configuration is valid as installed (as the user
        # the unit runs: the secret key is readable through the group)
        r = run("setpriv", "--reuid=pigato", "--regid=pigato", "--init-groups",
                "/usr/bin/pigato-broker", "--config", "/etc/pigato/broker.conf",
                "--check-config", check=False)
        self.assertEqual((r.returncode, r.stdout), (0, "/etc/pigato/broker.conf: OK\n"),
                         r.stderr)

    def check_library(self):
        multiarch = run("dpkg-architecture", "-qDEB_HOST_MULTIARCH").stdout.strip()
        lib = "/usr/lib/%s/libpigato.so.0" % multiarch
        self.assertIn("SONAME               libpigato.so.0",
                      run("objdump", "-p", lib).stdout)
        shlibs = run("dpkg-query", "--control-show", "libpigato0", "shlibs").stdout
        self.assertIn("libpigato 0 libpigato0", shlibs)
        # The header needs no other package: no Requires, no foreign -I
        env = dict(os.environ)
        env.pop("PKG_CONFIG_PATH", None)
        cflags = run("pkg-config", "--cflags", "libpigato", env=env).stdout.split()
        self.assertEqual([f for f in cflags if f not in ("-I/usr/include",)], [])
        self.assertEqual(run("pkg-config", "--libs", "libpigato", env=env).stdout.split(),
                         ["-lpigato"])
        self.assertIn("-lzmq", run("pkg-config", "--static", "--libs", "libpigato",
                                   env=env).stdout.split())
        depends = run("dpkg-query", "-W", "-f=${Depends}", "libpigato-dev").stdout
        self.assertNotIn("-dev", depends)
        source = os.path.join(self.tmp, "app.c")
        with open(source, "w") as f:
            f.write(APP)
        app = os.path.join(self.tmp, "app")
        run("sh", "-c", "cc -std=c11 -Wall -Werror %s -o %s $(pkg-config --cflags --libs "
            "libpigato)" % (source, app), env=env)
        self.assertEqual(run(app).stdout, "0.1.0 request timed out\n")

    def check_units(self):
        if not shutil.which("systemd-analyze"):
            return  # test_ops.py says why it skips the same check
        for unit in ("pigato-broker.service", "pigato-serve@.service"):
            path = "/lib/systemd/system/" + unit
            self.assertTrue(os.path.exists(path), path)
        instance = os.path.join(self.tmp, "pigato-serve@echo.service")
        shutil.copy("/lib/systemd/system/pigato-serve@.service", instance)
        # --man=no: systemd-analyze would format the pages with man, which
        # leaves them in /var/cache/man; man -w finds them without that
        for path in ("/lib/systemd/system/pigato-broker.service", instance):
            r = run("systemd-analyze", "verify", "--man=no", path, check=False)
            self.assertEqual((r.returncode, r.stderr), (0, ""), path)
        for page in ("pigato-broker", "pigato"):
            self.assertEqual(run("man", "-w", page, check=False).stdout.strip(),
                             "/usr/share/man/man1/%s.1.gz" % page)

    # -- a mesh on the packaged programs --------------------------------------

    def keys(self, name):
        run("/usr/bin/pigato-keygen", "new", name, "-o", self.tmp)
        with open(os.path.join(self.tmp, name + ".key")) as f:
            public = re.search(r'public-key = "(.{40})"', f.read()).group(1)
        return public, os.path.join(self.tmp, name + ".key_secret")

    def write_acl(self):
        """Identities given by their Z85 keys (the broker, as pigato, need
        not read this test's folder)."""
        worker_public, self.worker_key = self.keys("echo-worker")
        client_public, self.client_key = self.keys("web")
        with open("/etc/pigato/mesh.acl", "w") as f:
            f.write("identity echo-worker %s\nidentity web %s\n"
                    "allow echo-worker serve echo\nallow web call echo\n"
                    % (worker_public, client_public))

    def call(self, endpoint):
        env = {"PIGATO_BROKER": endpoint, "PIGATO_SERVER_KEY": "/etc/pigato/broker.key"}
        worker = Proc(["/usr/bin/pigato", "serve", "echo", "--echo", "--key",
                       self.worker_key, "-v"], name="worker", env=env)
        self.procs.append(worker)
        r = run("/usr/bin/pigato", "request", "echo", '"hi"', "--key", self.client_key,
                "--timeout", "%d" % secs(10000),
                env=dict(os.environ, **env), check=False)
        self.assertEqual((r.returncode, r.stdout), (0, '"hi"'), r.stderr + worker.tail())
        worker.stop(signal.SIGTERM, 5)

    def serve_as_the_unit_would(self):
        """No systemd here: the unit's ExecStart as its User and Group, with
        a $NOTIFY_SOCKET of our own to hear what systemd would."""
        self.write_acl()
        notify = os.path.join(self.tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify)
        sock.settimeout(secs(10))
        self.addCleanup(sock.close)
        os.chmod(self.tmp, 0o711)
        os.chmod(notify, 0o666)
        port = harness.free_port()
        endpoint = "tcp://127.0.0.1:%d" % port
        with open("/lib/systemd/system/pigato-broker.service") as f:
            exec_start = re.search(r"^ExecStart=(.*)$", f.read(), re.M).group(1).split()
        self.assertEqual(exec_start, ["/usr/bin/pigato-broker", "--config",
                                      "/etc/pigato/broker.conf"])
        broker = Proc(["setpriv", "--reuid=pigato", "--regid=pigato", "--init-groups"]
                      + exec_start + ["--bind", endpoint, "--log-format", "json"],
                      name="broker", env={"NOTIFY_SOCKET": notify})
        self.procs.append(broker)
        self.assertTrue(sock.recv(4096).startswith(b"READY=1\n"), broker.tail())
        ready = json.loads(broker.wait_for_log(r'"event":"ready"', 5).string)
        self.assertEqual((ready["mode"], ready["endpoints"]), ("acl", endpoint))
        self.call(endpoint)
        opened = broker.wait_for_log(r'"event":"connection_open".*"identity":"web"', 5)
        self.assertIsNotNone(opened, broker.tail())
        broker.send_signal(signal.SIGTERM)
        self.assertTrue(sock.recv(4096).startswith(b"STOPPING=1\n"))
        self.assertEqual(broker.wait(10), 0, broker.tail())

    def serve_through_systemd(self):
        self.write_acl()
        port = harness.free_port()
        endpoint = "tcp://127.0.0.1:%d" % port
        with open("/etc/pigato/broker.conf") as f:
            text = f.read()
        with open("/etc/pigato/broker.conf", "w") as f:
            f.write(re.sub(r"(?m)^bind .*$", "bind " + endpoint, text))
        run("systemctl", "daemon-reload")
        r = run("systemctl", "start", "pigato-broker", check=False)
        self.assertEqual(r.returncode, 0, r.stderr + run(
            "journalctl", "-u", "pigato-broker", "-n", "30", check=False).stdout)
        self.assertEqual(run("systemctl", "is-active", "pigato-broker",
                             check=False).stdout.strip(), "active")
        self.call(endpoint)
        self.assertEqual(run("systemctl", "reload", "pigato-broker",
                             check=False).returncode, 0)
        self.assertEqual(run("systemctl", "stop", "pigato-broker",
                             check=False).returncode, 0)

    # -- after dpkg --purge ---------------------------------------------------

    def check_gone(self):
        for package in PACKAGES:
            self.assertNotEqual(run("dpkg-query", "-W", package, check=False).returncode,
                                0, package)
        self.assertRaises(KeyError, pwd.getpwnam, "pigato")
        self.assertRaises(KeyError, grp.getgrnam, "pigato")
        multiarch = run("dpkg-architecture", "-qDEB_HOST_MULTIARCH").stdout.strip()
        for path in ("/etc/pigato", "/usr/bin/pigato-broker", "/usr/bin/pigato",
                     "/var/cache/man/cat1/pigato.1.gz",
                     "/var/cache/man/cat1/pigato-broker.1.gz",
                     "/usr/bin/pigato-keygen", "/usr/include/pigato.h",
                     "/lib/systemd/system/pigato-broker.service",
                     "/lib/systemd/system/pigato-serve@.service",
                     "/usr/lib/%s/libpigato.so.0" % multiarch,
                     "/usr/lib/%s/pkgconfig/libpigato.pc" % multiarch,
                     "/usr/share/doc/pigato-broker"):
            self.assertFalse(os.path.lexists(path), path)
        self.assertNotEqual(run("pkg-config", "--exists", "libpigato",
                                check=False).returncode, 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
