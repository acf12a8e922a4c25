#!/usr/bin/python3
"""bench/make_acl.py DIR NAME IDENTITIES RULES: writes DIR/NAME.acl for the
benchmarks. IDENTITIES keys, the bench's own bench-client and bench-worker
(DIR/bench-*.key) listed last so a decision is not found early; ten groups
of up to 100 identities; RULES rules, the bench client allowed to call and
the bench worker to serve echo and echo*."""
import os
import sys

import zmq.utils.z85 as z85

work, name = sys.argv[1], sys.argv[2]
ids, rules = int(sys.argv[3]) - 2, int(sys.argv[4])
with open(os.path.join(work, name + ".acl"), "w") as f:
    for i in range(ids):
        f.write("identity id%05d %s\n" % (i, z85.encode(os.urandom(32)).decode()))
    f.write("identity bench-client bench-client.key\nidentity bench-worker bench-worker.key\n")
    size = min(100, ids)
    for g in range(10):
        f.write("group g%d %s\n" % (g, " ".join("id%05d" % ((g * size + i) % ids) for i in range(size))))
    for r in range(rules - 4):
        f.write("allow @g%d call svc%d.* other%d\n" % (r % 10, r, r))
    f.write("deny * call admin.*\nallow bench-worker serve echo echo*\n"
            "allow bench-client call echo echo*\nallow @g1 serve svc*\n")
