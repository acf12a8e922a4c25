#!/bin/sh
# make bench: pigato-broker against a zero-logic relay (same framing, same
# client and worker), over CURVE and plaintext, and against nats-server
# request/reply (plaintext and TLS 1.3, bench/nats_bench.c) where nats-server
# is installable, in one invocation. Reports requests/s, latency percentiles
# and the ratios broker/relay and broker/NATS, since absolute figures drift
# on shared machines.
#   bench/run.sh BUILD [REQUESTS] [INFLIGHT]
set -eu
BUILD=${1:-build}
REQUESTS=${2:-${BENCH_REQUESTS:-100000}}
INFLIGHT=${3:-${BENCH_INFLIGHT:-100}}
WORK=$(mktemp -d)
PIDS=""
cleanup() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$BUILD/pigato-keygen" new broker -o "$WORK" >/dev/null
port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_log() {    # FILE PATTERN
    i=0
    while ! grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 100 ] && { echo "bench: no '$2' in $1" >&2; cat "$1" >&2; exit 1; }
        sleep 0.1
    done
}

# An ACL of 10,000 identities and 1,000 rules; the bench's own client and
# worker are listed last, so a decision is not found early.
"$BUILD/pigato-keygen" new bench-client -o "$WORK" >/dev/null
"$BUILD/pigato-keygen" new bench-worker -o "$WORK" >/dev/null
/usr/bin/python3 - "$WORK" <<'PY'
import os, sys, zmq.utils.z85 as z85
work = sys.argv[1]
with open(os.path.join(work, "big.acl"), "w") as f:
    for i in range(9998):
        f.write("identity id%05d %s\n" % (i, z85.encode(os.urandom(32)).decode()))
    f.write("identity bench-client bench-client.key\nidentity bench-worker bench-worker.key\n")
    for g in range(10):
        f.write("group g%d %s\n" % (g, " ".join("id%05d" % i for i in range(g * 100, g * 100 + 100))))
    for r in range(996):
        f.write("allow @g%d call svc%d.* other%d\n" % (r % 10, r, r))
    f.write("deny * call admin.*\nallow bench-worker serve echo\nallow bench-client call echo\nallow @g1 serve svc*\n")
PY

# run LABEL SERVER(broker|relay) SECURITY(curve|plain|acl) [BENCH ARGS...]
run() {
    label=$1; server=$2; security=$3; shift 3
    p=$(port); ep=tcp://127.0.0.1:$p
    wargs=""; bargs=""
    if [ "$security" = acl ]; then
        sargs="--key $WORK/broker.key_secret --acl $WORK/big.acl"; cargs="--server-key $WORK/broker.key"
        wargs="--key $WORK/bench-worker.key_secret"; bargs="--key $WORK/bench-client.key_secret"
    elif [ "$security" = curve ]; then
        sargs="--key $WORK/broker.key_secret"; cargs="--server-key $WORK/broker.key"
        [ "$server" = broker ] && sargs="$sargs --allow-any"
    else
        sargs="--insecure"; cargs="--insecure"
        [ "$server" = relay ] && sargs=""
    fi
    log=$WORK/$label.log
    if [ "$server" = broker ]; then
        "$BUILD/pigato-broker" --bind "$ep" $sargs --log-level warning >/dev/null 2>"$log" &
    else
        "$BUILD/pigato-relay" --bind "$ep" $sargs >/dev/null 2>"$log" &
    fi
    spid=$!; PIDS="$PIDS $spid"
    wait_log "$log" "event=ready"
    "$BUILD/pigato" serve echo --echo --concurrency 1000 --broker "$ep" $cargs $wargs >/dev/null 2>"$WORK/$label.worker.log" &
    wpid=$!; PIDS="$PIDS $wpid"
    status=0
    "$BUILD/pigato-bench" --broker "$ep" $cargs $bargs --requests "$REQUESTS" --inflight "$INFLIGHT" --label "$label" "$@" || status=$?
    kill "$wpid" "$spid" 2>/dev/null || true
    wait "$wpid" "$spid" 2>/dev/null || true
    [ $status = 0 ] || { echo "bench: $label failed (exit $status); logs:" >&2; tail -5 "$log" "$WORK/$label.worker.log" >&2; return 1; }
}

# NATS baseline: nats-server from PATH or /usr/sbin, else the Debian package
# when we are root; without it the NATS rows are skipped, not failed.
NATS=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || true)
if [ -z "$NATS" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing nats-server (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y nats-server >"$WORK/apt.log" 2>&1 \
        || { apt-get update >>"$WORK/apt.log" 2>&1 && apt-get install -y nats-server >>"$WORK/apt.log" 2>&1; } || true
    NATS=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || true)
fi
# A throwaway CA and a server certificate for 127.0.0.1; the load generator
# verifies the server against the CA and requires TLS 1.3
NATS_TLS=""
if [ -n "$NATS" ] && command -v openssl >/dev/null 2>&1 \
&& openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
       -keyout "$WORK/nats-ca.key" -out "$WORK/nats-ca.pem" >/dev/null 2>&1 \
&& openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
       -keyout "$WORK/nats-server.key" -out "$WORK/nats-server.csr" >/dev/null 2>&1 \
&& printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$WORK/nats-server.ext" \
&& openssl x509 -req -in "$WORK/nats-server.csr" -CA "$WORK/nats-ca.pem" -CAkey "$WORK/nats-ca.key" \
       -CAcreateserial -days 1 -extfile "$WORK/nats-server.ext" -out "$WORK/nats-server.pem" >/dev/null 2>&1; then
    NATS_TLS=yes
fi

# run_nats LABEL SECURITY(plain|tls) [BENCH ARGS...]: nats-server on a free
# loopback port, one echo responder, the load generator
run_nats() {
    label=$1; security=$2; shift 2
    p=$(port); log=$WORK/$label.log
    sargs=""; cargs=""
    if [ "$security" = tls ]; then
        sargs="--tls --tlscert $WORK/nats-server.pem --tlskey $WORK/nats-server.key"
        cargs="--tls --ca $WORK/nats-ca.pem"
    fi
    "$NATS" $sargs -a 127.0.0.1 -p "$p" >"$log" 2>&1 &
    spid=$!; PIDS="$PIDS $spid"
    wait_log "$log" "Server is ready"
    "$BUILD/nats-bench" --server "127.0.0.1:$p" $cargs --echo >/dev/null 2>"$WORK/$label.worker.log" &
    wpid=$!; PIDS="$PIDS $wpid"
    wait_log "$WORK/$label.worker.log" "event=ready"
    status=0
    "$BUILD/nats-bench" --server "127.0.0.1:$p" $cargs --requests "$REQUESTS" --inflight "$INFLIGHT" --label "$label" "$@" || status=$?
    kill "$wpid" "$spid" 2>/dev/null || true
    wait "$wpid" "$spid" 2>/dev/null || true
    [ $status = 0 ] || { echo "bench: $label failed (exit $status); logs:" >&2; tail -5 "$log" "$WORK/$label.worker.log" >&2; return 1; }
}

OUT=$WORK/results
echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) cores; $REQUESTS requests, $INFLIGHT in flight, 64-byte echo"
for security in curve plain; do
    run "relay-$security" relay "$security" | tee -a "$OUT"
    run "broker-$security" broker "$security" | tee -a "$OUT"
done
run "broker-acl" broker acl | tee -a "$OUT"
run "broker-curve2" broker curve | tee -a "$OUT"
# Sequential (1 in flight): a tenth of the requests is enough for a p50
SEQUENTIAL=$((REQUESTS / 10 > 1000 ? REQUESTS / 10 : 1000))
if [ -n "$NATS" ]; then
    run_nats "nats-plain" plain | tee -a "$OUT"
    if [ -n "$NATS_TLS" ]; then
        run_nats "nats-tls" tls | tee -a "$OUT"
        run "broker-curve-seq" broker curve --sequential --requests "$SEQUENTIAL" | tee -a "$OUT"
        run_nats "nats-tls-seq" tls --sequential --requests "$SEQUENTIAL" | tee -a "$OUT"
    else
        echo "skipped: nats-tls (could not make a test certificate with the openssl CLI)"
    fi
else
    echo "skipped: nats-server not installable"
fi
awk '
{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } rps[v["label"]] = v["rps"]; p50[v["label"]] = v["p50_us"] }
END {
    for (s = 0; s < 2; s++) {
        sec = s ? "plain" : "curve"
        if (rps["relay-" sec] > 0)
            printf "ratio %s: broker/relay throughput %.2f, p50 latency %.2f\n", sec, rps["broker-" sec] / rps["relay-" sec], p50["broker-" sec] / p50["relay-" sec]
    }
    # allow-any measured before and after the ACL run; the ACL against their mean
    any = (rps["broker-curve"] + rps["broker-curve2"]) / 2
    if (any > 0)
        printf "ratio acl: 10,000 identities + 1,000 rules / --allow-any throughput %.3f (allow-any runs %.0f and %.0f req/s)\n", rps["broker-acl"] / any, rps["broker-curve"], rps["broker-curve2"]
    if (rps["nats-tls"] > 0 && p50["nats-tls"] > 0)
        printf "ratio nats-tls: broker-curve/nats-tls throughput %.2f, p50 latency %.2f\n", rps["broker-curve"] / rps["nats-tls"], p50["broker-curve"] / p50["nats-tls"]
    if (rps["nats-plain"] > 0 && p50["nats-plain"] > 0)
        printf "ratio nats-plain: broker-plain/nats-plain throughput %.2f, p50 latency %.2f\n", rps["broker-plain"] / rps["nats-plain"], p50["broker-plain"] / p50["nats-plain"]
    if (p50["nats-tls-seq"] > 0)
        printf "ratio sequential: broker-curve/nats-tls p50 latency %.2f (%d us vs %d us, 1 in flight)\n", p50["broker-curve-seq"] / p50["nats-tls-seq"], p50["broker-curve-seq"], p50["nats-tls-seq"]
}' "$OUT"
