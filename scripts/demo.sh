#!/bin/sh
# make demo: a whole secured pigato mesh on this machine, end to end, then
# cleaned up: identities -> ACL -> broker (CURVE + ZAP) -> workers -> a
# permitted call, a forbidden one, and a stranger refused at the handshake.
set -eu
BUILD=$(cd "${1:-build}" && pwd)
WORK=$(mktemp -d /tmp/pigato-demo.XXXXXX)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
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
cd "$WORK"

say "1. Identities: one CURVE key pair each for the broker, a worker and a client"
for name in broker echo-worker web; do
    show "pigato-keygen new $name -o keys"
    pigato-keygen new "$name" -o keys >keygen.out; sed -n "s/^fingerprint: */   fingerprint /p" keygen.out
done
export PIGATO_SERVER_KEY="$WORK/keys/broker.key"

say "2. The policy: who may serve and call what"
cat > mesh.acl <<'ACL'
identity  echo-worker  keys/echo-worker.key
identity  web          keys/web.key
allow     echo-worker  serve  echo upper
allow     web          call   echo upper admin.*
deny      *            call   admin.*        # deny wins over allow
ACL
cat mesh.acl
show "pigato-broker --check-acl mesh.acl"
pigato-broker --check-acl mesh.acl

say "3. The broker: CURVE, our ZAP handler, the ACL on every message"
show "pigato-broker --key keys/broker.key_secret --acl mesh.acl --bind $PIGATO_BROKER &"
pigato-broker --key keys/broker.key_secret --acl mesh.acl --bind "$PIGATO_BROKER" 2>broker.log &
PIDS="$PIDS $!"
wait_log broker.log "event=ready"
grep "event=ready" broker.log

say "4. Workers, each with its own identity"
show "pigato serve echo --echo --key keys/echo-worker.key_secret &"
pigato serve echo --echo --key keys/echo-worker.key_secret 2>echo.log &
PIDS="$PIDS $!"
show "pigato serve upper --key keys/echo-worker.key_secret -- tr a-z A-Z &"
pigato serve upper --key keys/echo-worker.key_secret -- tr a-z A-Z 2>upper.log &
PIDS="$PIDS $!"
wait_log broker.log "event=worker_ready service=echo"
wait_log broker.log "event=worker_ready service=upper"

export PIGATO_KEY="$WORK/keys/web.key_secret"
say "5. A permitted call (client identity: web)"
show "pigato request echo '\"hello, mesh\"'"
pigato request echo '"hello, mesh"'
show "echo 'quiet please' | pigato request upper"
echo "quiet please" | pigato request upper

say "6. A forbidden call: refused at once, and logged by the broker"
show "pigato request admin.reset '{}'"
if pigato request admin.reset '{}'; then
    echo "demo: the forbidden call succeeded; it must not" >&2
    exit 1
else
    echo "(refused: exit status $?)"
fi
grep "event=access_denied" broker.log | tail -1

say "7. A key the ACL does not list cannot even connect"
pigato-keygen new stranger -o keys >/dev/null
show "pigato request echo '\"hi\"' --key keys/stranger.key_secret --timeout 1500"
if pigato request echo '"hi"' --key keys/stranger.key_secret --timeout 1500; then
    echo "demo: the stranger's call succeeded; it must not" >&2
    exit 1
else
    echo "(refused: exit status $?)"
fi
wait_log broker.log "event=zap_deny"
grep "event=zap_deny" broker.log | tail -1

say "Done: stopping the broker and workers, removing $WORK"
