#!/usr/bin/python3
"""The README's shell sections run as written (issue 15): every ```sh block
of "A mesh in four commands" and of "Production: identities and an ACL",
in order, as one bash script in a temporary directory, with the built
programs first on PATH. The only change: port 5555 becomes a free port
(PIGATO_BROKER points the four-command section's clients at it). Then
what the section promises is checked: the request printed "hi", the
trusted folder holds no secret key, and after the revoke and the SIGHUP
sent through the pid file, web's key is refused."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import harness
from harness import BUILD, REPO, secs


def section_blocks(title):
    """The ```sh blocks of the README section whose heading is title."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    start = text.index("\n## " + title + "\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


class ReadmeTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pigato-readme-")
        self.port = harness.free_port()
        self.script = None
        self.log = None

    def tearDown(self):
        # The background broker and worker the script left: its session
        if self.script is not None:
            try:
                os.killpg(self.script.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.script.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                os.killpg(self.script.pid, signal.SIGKILL)
            self.script.stdout.close()
        if self.log:
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_section(self, title):
        blocks = section_blocks(title)
        self.assertTrue(blocks, "README has no ```sh block under '## %s'" % title)
        body = "\n".join(blocks).replace("5555", str(self.port))
        script = "set -e\n" + body + "\n"
        env = dict(os.environ, PATH=BUILD + os.pathsep + os.environ["PATH"],
                   PIGATO_BROKER="tcp://127.0.0.1:%d" % self.port)
        for var in ("PIGATO_SERVER_KEY", "PIGATO_KEY", "PIGATO_CA"):
            env.pop(var, None)
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w+")
        self.script = subprocess.Popen(["bash", "-c", script], cwd=self.tmp, env=env,
                                       stdout=subprocess.PIPE, stderr=self.log,
                                       start_new_session=True)
        # The script's own stdout closes when it ends; background jobs
        # keep theirs open, so wait for the exit, not for end of file
        rc = self.script.wait(secs(60))
        out = b""
        os.set_blocking(self.script.stdout.fileno(), False)
        try:
            out = self.script.stdout.read() or b""
        except BlockingIOError:
            pass
        self.log.seek(0)
        err = self.log.read()
        self.assertEqual(rc, 0, "the README's '%s' failed\n%s\n--- stdout\n%s\n--- stderr\n%s"
                         % (title, script, out.decode(errors="replace"), err))
        return out.decode(errors="replace"), env

    def wait_log(self, regex, timeout):
        deadline = time.monotonic() + secs(timeout)
        while time.monotonic() < deadline:
            self.log.seek(0)
            if re.search(regex, self.log.read()):
                return True
            time.sleep(0.05)
        return False

    def test_a_mesh_in_four_commands(self):
        out, _ = self.run_section("A mesh in four commands")
        self.assertIn('"hi"', out)

    def test_production_section(self):
        out, env = self.run_section("Production: identities and an ACL")
        self.assertIn('"hi"', out)
        self.assertIn("mesh.acl: OK", out)
        self.assertIn("certs/web.crt: OK", out)          # openssl verify
        for name in os.listdir(os.path.join(self.tmp, "certs")):
            self.assertFalse(name.endswith("_secret"), "a secret key in the trusted folder")
        self.log.seek(0)
        self.assertNotIn("secret_in_trust_dir", self.log.read())
        # kill -HUP $(cat broker.pid) reached the broker: web is revoked
        self.assertTrue(self.wait_log(r"event=acl_reloaded", 10),
                        "the broker did not reload after the README's SIGHUP")
        env = dict(env, PIGATO_SERVER_KEY="broker/broker.crt", PIGATO_CA="ca/ca.crt")
        refused = subprocess.run([os.path.join(BUILD, "pigato"), "request", "echo", '"hi"',
                                  "--key", "secrets/web.key_secret", "--timeout", "5000"],
                                 cwd=self.tmp, env=env, capture_output=True, text=True,
                                 timeout=secs(30))
        self.assertEqual(refused.returncode, 3, refused.stderr)


if __name__ == "__main__":
    harness.main()
