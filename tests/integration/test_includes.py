#!/usr/bin/python3
"""scripts/check-includes.py (what `make test` runs first): passes on a tree
whose includes keep the layers, and fails, naming the culprit, on a circle
between files, a circle between folders, a lower layer including a higher
one, and an include it cannot resolve. Also: the real tree passes."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "check-includes.py")

#  A small tree shaped like the project: every layer, quoted includes the
#  way the sources write them ("pigato.h" through -Iinclude).
CLEAN = {
    "include/pigato.h": "#include <stddef.h>\n",
    "mesh/base/internal.h": '#include "pigato.h"\n',
    "mesh/base/heap.h": '#include "internal.h"\n',
    "mesh/base/heap.c": '#include "heap.h"\n#include "internal.h"\n',
    "mesh/wire/codec.h": '#include "../base/internal.h"\n',
    "certs/ca.h": '#include "pigato.h"\n',
    "auth/acl.h": '#include "../mesh/base/internal.h"\n',
    "auth/acl.c": '#include "acl.h"\n#include "../certs/ca.h"\n',
    "keys/key.c": '#include "../certs/ca.h"\n',
    "mesh/library/peer.h": '#include "../wire/codec.h"\n',
    "mesh/broker/broker.c": '#include "../../auth/acl.h"\n',
    "mesh/programs/cli.h": '#include "pigato.h"\n',
    "mesh/programs/cli.c": '#include "cli.h"\n#include "../base/internal.h"\n',
}


class CheckIncludes(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="pigato-includes-")

    def tearDown(self):
        shutil.rmtree(self.root)

    def write_tree(self, files):
        for path, text in files.items():
            full = os.path.join(self.root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)

    def check(self, root=None):
        return subprocess.run(
            [sys.executable, SCRIPT, "--root", root or self.root],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, timeout=60)

    def assert_fails_with(self, files, *expected):
        self.write_tree(dict(CLEAN, **files))
        result = self.check()
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        for text in expected:
            self.assertIn(text, result.stderr)
        return result

    def test_layered_tree_passes(self):
        self.write_tree(CLEAN)
        result = self.check()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("no circles, no layer violations", result.stdout)
        self.assertEqual(result.stderr, "")

    def test_file_circle_fails(self):
        self.assert_fails_with(
            {"mesh/base/heap.h": '#include "internal.h"\n#include "table.h"\n',
             "mesh/base/table.h": '#include "heap.h"\n'},
            "file circle: mesh/base/heap.h -> mesh/base/table.h -> "
            "mesh/base/heap.h")

    def test_file_including_itself_fails(self):
        self.assert_fails_with(
            {"mesh/wire/codec.h": '#include "codec.h"\n'},
            "file circle: mesh/wire/codec.h -> mesh/wire/codec.h")

    def test_folder_circle_fails_without_a_file_circle(self):
        #  auth and keys are one layer, so each include alone is allowed;
        #  together they are a circle between the folders
        result = self.assert_fails_with(
            {"auth/zap.c": '#include "../keys/keyfile.h"\n',
             "keys/keyfile.h": "\n",
             "keys/keyfile.c": '#include "../auth/acl.h"\n'},
            "folder circle: auth -> keys -> auth",
            "auth/zap.c:1 includes keys/keyfile.h",
            "keys/keyfile.c:1 includes auth/acl.h")
        self.assertNotIn("file circle", result.stderr)
        self.assertNotIn("layer violation", result.stderr)

    def test_lower_layer_including_higher_fails(self):
        self.assert_fails_with(
            {"mesh/wire/native.c": '#include "../library/peer.h"\n'},
            "layer violation: mesh/wire/native.c:1 includes "
            "mesh/library/peer.h")

    def test_base_declaring_through_a_library_header_fails(self):
        self.assert_fails_with(
            {"mesh/base/internal.h":
                 '#include "pigato.h"\n#include "../library/peer.h"\n'},
            "layer violation: mesh/base/internal.h:2",
            "folder circle:")

    def test_same_layer_lateral_include_passes(self):
        #  auth -> keys is lateral (layer 1) and acyclic here
        self.write_tree(dict(CLEAN, **{
            "auth/zap.c": '#include "../keys/keyfile.h"\n',
            "keys/keyfile.h": '#include "../mesh/base/internal.h"\n'}))
        result = self.check()
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_broker_and_library_stay_apart(self):
        #  Lateral and acyclic, but the two share only what lies below
        self.assert_fails_with(
            {"mesh/library/link.c": '#include "../broker/broker.h"\n',
             "mesh/broker/broker.h": '#include "../wire/codec.h"\n'},
            "apart: mesh/library/link.c:1 includes")

    def test_unresolved_include_fails(self):
        self.assert_fails_with(
            {"keys/key.c": '#include "../certs/nosuch.h"\n'},
            'keys/key.c:1: cannot resolve #include "../certs/nosuch.h"')

    def test_include_outside_checked_folders_fails(self):
        self.write_tree({"bench/proc.h": "\n"})
        self.assert_fails_with(
            {"mesh/library/peer.h": '#include "../../bench/proc.h"\n'},
            "is bench/proc.h, outside")

    def test_real_tree_passes(self):
        result = self.check(ROOT)
        self.assertEqual(result.returncode, 0, result.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
