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

# A free TCP port on 127.0.0.1
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits until FILE holds PATTERN, at most TENTHS tenths of a second
# (default 100); fails the bench with FILE's contents otherwise
wait_log() {    # FILE PATTERN [TENTHS]
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt "${3:-100}" ] && { echo "bench: no '$2' in $1" >&2; cat "$1" >&2; exit 1; }
        sleep 0.1
    done
}
