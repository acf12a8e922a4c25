#!/bin/sh
# make demo: a whole pigato mesh on this machine, end to end, then cleaned up.
#   keys -> broker (CURVE) -> workers -> client calls: one that succeeds,
#   one that the mesh refuses.
set -eu
BUILD=${1:-build}
WORK=$(mktemp -d /tmp/pigato-demo.XXXXXX)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
wait_log() {    # FILE PATTERN
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 100 ]; then echo "demo: timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1; fi
        sleep 0.1
    done
}
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export PIGATO_BROKER=tcp://127.0.0.1:$PORT
PATH=$BUILD:$PATH

say "1. Identities: a CURVE key pair for the broker"
run pigato-keygen new broker -o "$WORK/keys"
export PIGATO_SERVER_KEY="$WORK/keys/broker.key"

say "2. The broker: CURVE on, any client key accepted (--allow-any)"
printf '$ pigato-broker --allow-any --key %s --bind %s &\n' "$WORK/keys/broker.key_secret" "$PIGATO_BROKER"
pigato-broker --allow-any --key "$WORK/keys/broker.key_secret" --bind "$PIGATO_BROKER" 2>"$WORK/broker.log" &
PIDS="$PIDS $!"
wait_log "$WORK/broker.log" "event=ready"
grep "event=ready" "$WORK/broker.log"

say "3. Workers: an echo service, and a shell command as a service"
printf '$ pigato serve echo --echo &\n'
pigato serve echo --echo 2>"$WORK/echo.log" &
PIDS="$PIDS $!"
printf "\$ pigato serve upper -- tr a-z A-Z &\n"
pigato serve upper -- tr a-z A-Z 2>"$WORK/upper.log" &
PIDS="$PIDS $!"
wait_log "$WORK/broker.log" "event=worker_ready service=echo"
wait_log "$WORK/broker.log" "event=worker_ready service=upper"

say "4. A client calls them (encrypted, through the broker)"
run pigato request echo '"hello, mesh"'
printf '$ echo "quiet please" | pigato request upper\n'
echo "quiet please" | pigato request upper

say "5. A client that does not trust this broker's key is refused"
pigato-keygen new impostor -o "$WORK/keys" >/dev/null
printf '$ pigato request echo '"'"'"hi"'"'"' --server-key impostor.key --timeout 2000\n'
if pigato request echo '"hi"' --server-key "$WORK/keys/impostor.key" --timeout 2000; then
    echo "demo: the call with the wrong server key succeeded; it must not" >&2
    exit 1
else
    echo "(refused: exit status $?; the CURVE handshake cannot succeed with the wrong key)"
fi

say "Done: stopping the broker and workers"
