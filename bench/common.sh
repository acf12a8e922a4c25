# Sourced by the bench scripts (after BUILD and HERE are set): a work
# directory removed on exit, PIDS killed and reaped on exit, and the
# bench's three identities (broker, bench-client, bench-worker) in WORK.
WORK=$(mktemp -d)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
for name in broker bench-client bench-worker; do
    "$BUILD/pigato-keygen" new "$name" -o "$WORK" >/dev/null
done
