"""make install as a packager runs it, then a program built against the
installed header and libpigato.pc, run against the installed library."""
import os
import shutil
import subprocess
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("PIGATO_BUILD", os.path.join(ROOT, "build"))

APP = r"""
#include <pigato.h>
#include <stdio.h>
int main (void) {
    pigato_client_t *client = pigato_client_new ();
    if (!client) return 1;
    pigato_client_set_insecure (client, true);
    int rc = pigato_client_connect (client, "tcp://127.0.0.1:1");
    pigato_client_destroy (&client);
    printf ("%s|%s|%d\n", pigato_version (), pigato_strerror (PIGATO_E_TIMEOUT), rc);
    return client == NULL ? 0 : 1;
}
"""


class InstallTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pigato-install-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_install_then_build_and_run_an_app_with_pkg_config(self):
        dest = os.path.join(self.tmp, "root")
        prefix = "/opt/pigato"
        subprocess.run(["make", "-s", "install", "BUILD=" + BUILD, "PREFIX=" + prefix,
                        "DESTDIR=" + dest], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        root = dest + prefix
        for path in ("include/pigato.h", "lib/libpigato.a", "lib/libpigato.so",
                     "lib/libpigato.so.0", "lib/pkgconfig/libpigato.pc",
                     "bin/pigato-broker", "bin/pigato", "bin/pigato-keygen",
                     "share/man/man1/pigato-broker.1", "share/man/man1/pigato.1"):
            self.assertTrue(os.path.exists(os.path.join(root, path)), path)
        self.assertTrue(os.access(os.path.join(root, "bin/pigato-broker"), os.X_OK))
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(root, "lib/pkgconfig"),
                   PKG_CONFIG_SYSROOT_DIR=dest)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libpigato"], env=env,
                               check=True, capture_output=True, text=True).stdout.split()
        self.assertIn("-lpigato", flags)
        # pigato.h needs no other package's headers: --cflags names our
        # include folder and nothing else (no libczmq, libzmq... folders)
        cflags = subprocess.run(["pkg-config", "--cflags", "libpigato"], env=env,
                                check=True, capture_output=True, text=True).stdout.split()
        self.assertEqual(cflags, ["-I" + root + "/include"])
        source = os.path.join(self.tmp, "app.c")
        with open(source, "w") as f:
            f.write(APP)
        app = os.path.join(self.tmp, "app")
        # A sanitized build (SANITIZE=...) installs an instrumented library:
        # the app needs the same runtime
        sanitize = os.environ.get("SANITIZE")
        extra = ["-fsanitize=" + sanitize] if sanitize else []
        subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", source, "-o", app] + extra
                       + flags, check=True)
        out = subprocess.run([app], env=dict(os.environ,
                                              LD_LIBRARY_PATH=os.path.join(root, "lib")),
                             check=True, capture_output=True, text=True).stdout
        self.assertEqual(out.strip(), "0.1.0|request timed out|0")
        # Only the public API is exported from the shared library
        symbols = subprocess.run(["nm", "-D", "--defined-only",
                                  os.path.join(root, "lib/libpigato.so.0")],
                                 check=True, capture_output=True, text=True).stdout
        exported = [line.split()[-1] for line in symbols.splitlines() if " T " in line]
        self.assertTrue(exported)
        self.assertEqual([s for s in exported if not s.startswith("pigato_")], [])

    def files_under(self, top):
        found = []
        for where, _, files in os.walk(top):
            found += [os.path.relpath(os.path.join(where, f), top) for f in files]
        return sorted(found)

    def test_uninstall_removes_exactly_what_install_put_there(self):
        dest = os.path.join(self.tmp, "root")
        prefix = "/usr"
        libdir = "/usr/lib/x86_64-linux-gnu"        # a packager's LIBDIR
        # Something of someone else's in the same folders stays
        os.makedirs(dest + libdir)
        other = os.path.join(dest + libdir, "libother.so.1")
        with open(other, "w") as f:
            f.write("not ours")
        make = ["make", "-s", "BUILD=" + BUILD, "PREFIX=" + prefix, "LIBDIR=" + libdir,
                "DESTDIR=" + dest]
        subprocess.run(make + ["install"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        installed = self.files_under(dest)
        self.assertIn("usr/lib/x86_64-linux-gnu/libpigato.so.0", installed)
        self.assertIn("usr/lib/x86_64-linux-gnu/pkgconfig/libpigato.pc", installed)
        self.assertIn("usr/bin/pigato-broker", installed)
        with open(os.path.join(dest + libdir, "pkgconfig/libpigato.pc")) as f:
            pc = f.read()
        self.assertIn("libdir=" + libdir + "\n", pc)
        self.assertNotIn("Requires", pc)
        subprocess.run(make + ["uninstall"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        self.assertEqual(self.files_under(dest), ["usr/lib/x86_64-linux-gnu/libother.so.1"])
        # Run again, it has nothing to do and does not fail
        subprocess.run(make + ["uninstall"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    unittest.main(verbosity=2)
