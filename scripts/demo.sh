#!/bin/sh
# make demo: a whole secured pigato mesh on this machine, end to end, then
# cleaned up: a mesh CA and identities -> ACL -> broker (CURVE + ZAP) ->
# workers -> a permitted call, a forbidden one, a stranger refused at the
# handshake, and a revoked identity refused after a reload.
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

say "1. A mesh CA, and identities it issues (X.509 certificates of CURVE keys)"
show "pigato-keygen ca init --mesh demo -o ca"
pigato-keygen ca init --mesh demo -o ca >/dev/null
show "pigato-keygen new broker -o keys"
pigato-keygen new broker -o keys >/dev/null
for name in echo-worker web; do
    show "pigato-keygen issue $name --ca ca --valid 1d -o certs"
    pigato-keygen issue "$name" --ca ca --valid 1d -o certs >keygen.out
    sed -n "s/^fingerprint: */   fingerprint /p" keygen.out
done
show "openssl verify -CAfile ca/ca.crt certs/web.crt"
openssl verify -CAfile ca/ca.crt certs/web.crt
export PIGATO_SERVER_KEY="$WORK/keys/broker.key"

say "2. The policy: whom the broker trusts, and who may serve and call what"
cat > mesh.acl <<'ACL'
trust     ca/ca.crt    certs          # every valid certificate the CA issued
revoked   ca/ca.crl
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
BROKER=$!
PIDS="$PIDS $BROKER"
wait_log broker.log "event=ready"
grep "event=ready" broker.log

say "4. Workers, each with its own identity"
show "pigato serve echo --echo --key certs/echo-worker.key_secret &"
pigato serve echo --echo --key certs/echo-worker.key_secret 2>echo.log &
PIDS="$PIDS $!"
show "pigato serve upper --key certs/echo-worker.key_secret -- tr a-z A-Z &"
pigato serve upper --key certs/echo-worker.key_secret -- tr a-z A-Z 2>upper.log &
PIDS="$PIDS $!"
wait_log broker.log "event=worker_ready service=echo"
wait_log broker.log "event=worker_ready service=upper"

export PIGATO_KEY="$WORK/certs/web.key_secret"
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

say "8. Revoke web's certificate and reload: refused from its next request on"
show "pigato-keygen revoke certs/web.crt --ca ca && kill -HUP <broker>"
pigato-keygen revoke certs/web.crt --ca ca
kill -HUP "$BROKER"
wait_log broker.log "event=acl_reloaded"
show "pigato request echo '\"hi again\"'"
if pigato request echo '"hi again"' --timeout 1500; then
    echo "demo: the revoked identity's call succeeded; it must not" >&2
    exit 1
else
    echo "(refused: exit status $?)"
fi

say "Done: stopping the broker and workers, removing $WORK"
