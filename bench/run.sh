#!/bin/sh
# make bench: pigato-broker against baselines in one invocation, so that the
# ratios (not the absolute figures, which drift on shared machines) count:
#  * a zero-logic relay (bench/relay.c, pigato 0.0.46 framing), CURVE and
#    plaintext;
#  * nats-server request/reply, plaintext and TLS 1.3 (bench/nats_bench.c),
#    where nats-server is installable;
#  * pigato 0.0.46's Node broker (bench/node_broker.js), plaintext and
#    CURVE, where node and npm are (tests/node/setup.sh installs it).
# pigato-broker runs --insecure, CURVE --allow-any and CURVE with ACLs, with
# clients and workers in 0.0.46 and in native framing; then scale runs:
# 1,000 services, ACL identities 10 vs 10,000, --io-threads 1 vs 2 (when the
# broker has the option), 10,000 idle CURVE clients (memory per connection,
# against the relay as libzmq's own share) and a storm of 1,000 clients
# connecting at once (handshakes/s). bench/summary.py prints the ratios.
#   bench/run.sh BUILD [REQUESTS] [INFLIGHT]
# Environment: BENCH_REQUESTS, BENCH_INFLIGHT, BENCH_IDLE (10000 idle
# clients), BENCH_STORM (1000), BENCH_SCALE=0 skips the scale runs,
# BENCH_SCALE_ROUNDS (5) rounds of the flatness pairs, BENCH_ROUNDS (15)
# interleaved rounds against NATS,
# BENCH_NODE=0 the Node broker, BENCH_NATS=0 nats-server, BENCH_ONLY=GLOB
# runs only the rows whose label matches that one shell pattern (e.g. 'idle-*').
set -eu
BUILD=${1:-build}
REQUESTS=${2:-${BENCH_REQUESTS:-100000}}
INFLIGHT=${3:-${BENCH_INFLIGHT:-100}}
IDLE=${BENCH_IDLE:-10000}
STORM=${BENCH_STORM:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
# Thousands of connections: as many descriptors as we may have (the bench
# programs raise their own limit too; the broker inherits this one)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

BROKER_Z85_SECRET=$(sed -n 's/^ *secret-key = "\(.*\)"/\1/p' "$WORK/broker.key_secret")
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# ACLs (bench/make_acl.py): the main one of 1,000 identities and 100
# rules, and 10 vs 10,000 identities with 1,000 rules for identity scale
make_acl() { /usr/bin/python3 "$HERE/make_acl.py" "$WORK" "$@"; }
make_acl acl1k 1000 100
make_acl acl10k 10000 1000
make_acl acl10 10 1000

# start_server KIND(broker|relay|node) SECURITY(plain|curve|acl1k|acl10k|acl10)
# [BROKER ARGS...]: starts it on a free port; sets EP, SPID and CARGS (the
# broker key arguments for clients and workers)
start_server() {
    kind=$1; security=$2; shift 2
    p=$(port); EP=tcp://127.0.0.1:$p
    log=$WORK/server.log; : >"$log"
    CARGS="--server-key $WORK/broker.key"
    case $security in
        plain) CARGS="--insecure"; sargs="--insecure" ;;
        curve) sargs="--key $WORK/broker.key_secret --allow-any" ;;
        *)     sargs="--key $WORK/broker.key_secret --acl $WORK/$security.acl" ;;
    esac
    case $kind in
        broker)
            "$BUILD/pigato-broker" --bind "$EP" $sargs --log-level warning "$@" >/dev/null 2>"$log" & ;;
        relay)
            [ "$security" = plain ] && sargs="" || sargs="--key $WORK/broker.key_secret"
            "$BUILD/pigato-relay" --bind "$EP" $sargs >/dev/null 2>"$log" & ;;
        zaprelay)
            /usr/bin/python3 "$HERE/zap_relay.py" --bind "$EP" --key "$WORK/broker.key_secret" >/dev/null 2>"$log" & ;;
        node)
            [ "$security" = plain ] && sargs="" || sargs="--secret-key $BROKER_Z85_SECRET"
            NODE_PATH=$NODE_MODULES NODE_NO_WARNINGS=1 node "$HERE/node_broker.js" --bind "$EP" \
                --intch "tcp://127.0.0.1:$(port)" $sargs >/dev/null 2>"$log" & ;;
    esac
    SPID=$!; PIDS="$PIDS $SPID"
    wait_log "$log" "event=ready"
}
stop() {        # PID...: stops, reaps and forgets (a reaped pid may be reused)
    kill "$@" 2>/dev/null || true
    for pid in "$@"; do
        wait "$pid" 2>/dev/null || true
        PIDS=$(echo " $PIDS " | sed "s/ $pid / /")
    done
}

# row LABEL KIND SECURITY FRAMING [BENCH ARGS...]: one server, one echo
# worker process (WORKER_ARGS, default one worker), the load generator;
# BROKER_ARGS go to pigato-broker. Identities are the bench's own keys
# for the ACLs, ephemeral otherwise.
row() {
    label=$1; kind=$2; security=$3; framing=$4; shift 4
    start_server "$kind" "$security" ${BROKER_ARGS:-}
    wkey=""; ckey=""
    case $security in acl*) wkey="--key $WORK/bench-worker.key_secret"; ckey="--key $WORK/bench-client.key_secret" ;; esac
    "$BUILD/pigato-bench" --worker --broker "$EP" $CARGS $wkey --framing "$framing" \
        ${WORKER_ARGS:-} 2>"$WORK/worker.log" &
    wpid=$!; PIDS="$PIDS $wpid"
    wait_log "$WORK/worker.log" "event=ready" 600
    status=0
    "$BUILD/pigato-bench" --broker "$EP" $CARGS $ckey --framing "$framing" --broker-pid "$SPID" \
        --requests "$REQUESTS" --inflight "$INFLIGHT" --label "$label" "$@" >>"$OUT" 2>"$WORK/client.log" || status=$?
    stop "$wpid" "$SPID"
    if [ $status != 0 ]; then
        echo "bench: $label failed (exit $status); logs:" >&2
        tail -n 5 "$WORK/server.log" "$WORK/worker.log" "$WORK/client.log" >&2
        return 1
    fi
    tail -1 "$OUT"
}

# run_floor LABEL SECURITY(plain|curve): bench/floor.c, the transport's
# own cost: one native-sized batch going round client -> relay -> worker ->
# relay -> client with no logic anywhere
run_floor() {
    label=$1; security=$2
    p=$(port); EP=tcp://127.0.0.1:$p; log=$WORK/server.log; : >"$log"
    if [ "$security" = plain ]; then sargs="--insecure"; cargs="--insecure"
    else sargs="--key $WORK/broker.key_secret"; cargs="--server-key $WORK/broker.key"; fi
    "$BUILD/pigato-floor" --relay --bind "$EP" $sargs 2>"$log" &
    SPID=$!; PIDS="$PIDS $SPID"
    wait_log "$log" "event=ready"
    "$BUILD/pigato-floor" --worker --broker "$EP" $cargs 2>"$WORK/worker.log" &
    wpid=$!; PIDS="$PIDS $wpid"
    wait_log "$WORK/worker.log" "event=ready"
    status=0
    "$BUILD/pigato-floor" --broker "$EP" $cargs --broker-pid "$SPID" --requests "$REQUESTS" \
        --inflight "$INFLIGHT" --label "$label" >>"$OUT" 2>"$WORK/client.log" || status=$?
    stop "$wpid" "$SPID"
    [ $status = 0 ] || { echo "bench: $label failed (exit $status); logs:" >&2; tail -5 "$log" "$WORK/worker.log" "$WORK/client.log" >&2; return 1; }
    tail -1 "$OUT"
}

# conns LABEL KIND COUNT [BATCH]: COUNT CURVE clients connect to a fresh
# server (--allow-any), all at once or BATCH at a time per process, each
# gets a heartbeat answer; prints handshakes/s and the server's RSS growth
# per connection. Clients are spread over processes of at most 4,000 (two
# descriptors per connection each).
conns() {
    label=$1; kind=$2; count=$3; batch=${4:-0}
    start_server "$kind" curve
    sleep 0.5
    before=$(rss_kb "$SPID")
    procs=$(( (count + 3999) / 4000 )); cpids=""
    i=0
    while [ $i -lt $procs ]; do
        n=$(( count / procs + (i < count % procs ? 1 : 0) ))
        "$BUILD/pigato-conns" --broker "$EP" $CARGS --connections "$n" --batch "$batch" --hold --label "$label" \
            >"$WORK/conns.$i.out" 2>"$WORK/conns.$i.log" &
        cpids="$cpids $!"; PIDS="$PIDS $!"
        i=$((i + 1))
    done
    i=0
    while [ $i -lt $procs ]; do wait_log "$WORK/conns.$i.out" "label=" 1800; i=$((i + 1)); done
    sleep 1
    after=$(rss_kb "$SPID")
    stop $cpids "$SPID"
    cat "$WORK"/conns.*.out | awk -v label="$label" -v count="$count" -v before="$before" -v after="$after" '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
          answered += v["answered"]; if (v["seconds"] > seconds) seconds = v["seconds"] }
        END { printf "label=%s connections=%d answered=%d seconds=%.3f handshakes_per_s=%.0f rss_before_kb=%d rss_after_kb=%d per_conn_bytes=%.0f\n",
              label, count, answered, seconds, answered / seconds, before, after, (after - before) * 1024 / count }' >>"$OUT"
    tail -1 "$OUT"
    if [ "$(tail -1 "$OUT" | sed 's/.*answered=\([0-9]*\).*/\1/')" != "$count" ]; then
        echo "bench: $label: not every connection was answered; logs:" >&2
        tail -n 3 "$WORK"/conns.* "$WORK/server.log" >&2
        rm -f "$WORK"/conns.*
        return 1
    fi
    rm -f "$WORK"/conns.*
}

# NATS baseline: nats-server from PATH or /usr/sbin, else the Debian package
# when we are root; without it the NATS rows are skipped, not failed.
NATS=""
if [ "${BENCH_NATS:-1}" != 0 ]; then
    NATS=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || true)
    if [ -z "$NATS" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing nats-server (apt-get)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y nats-server >"$WORK/apt.log" 2>&1 \
            || { apt-get update >>"$WORK/apt.log" 2>&1 && apt-get install -y nats-server >>"$WORK/apt.log" 2>&1; } || true
        NATS=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || true)
    fi
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
    p=$(port); log=$WORK/server.log
    sargs=""; cargs=""
    if [ "$security" = tls ]; then
        sargs="--tls --tlscert $WORK/nats-server.pem --tlskey $WORK/nats-server.key"
        cargs="--tls --ca $WORK/nats-ca.pem"
    fi
    "$NATS" $sargs -a 127.0.0.1 -p "$p" >"$log" 2>&1 &
    spid=$!; PIDS="$PIDS $spid"
    wait_log "$log" "Server is ready"
    "$BUILD/nats-bench" --server "127.0.0.1:$p" $cargs --echo >/dev/null 2>"$WORK/worker.log" &
    wpid=$!; PIDS="$PIDS $wpid"
    wait_log "$WORK/worker.log" "event=ready"
    status=0
    "$BUILD/nats-bench" --server "127.0.0.1:$p" $cargs --server-pid "$spid" --requests "$REQUESTS" \
        --inflight "$INFLIGHT" --label "$label" "$@" >>"$OUT" || status=$?
    stop "$wpid" "$spid"
    [ $status = 0 ] || { echo "bench: $label failed (exit $status); logs:" >&2; tail -5 "$log" "$WORK/worker.log" >&2; return 1; }
    tail -1 "$OUT"
}

# Node pigato 0.0.46's broker, if node and npm are here (installed once
# into BUILD/node)
NODE_MODULES=""
if [ "${BENCH_NODE:-1}" != 0 ]; then
    NODE_MODULES=$("$HERE/../tests/node/setup.sh" "$BUILD" 2>"$WORK/node-setup.log") || NODE_MODULES=""
fi

# The framings: native and 0.0.46 once libpigato can choose, else the
# library's default only
if "$BUILD/pigato-bench" --has-framing; then
    FRAMINGS="0.0.46 native"; F46=0.0.46
else
    FRAMINGS="auto"; F46=auto
    echo "note: this libpigato cannot choose a framing; rows use its default (auto)"
fi
FN=$(echo "$FRAMINGS" | awk '{ print $NF }')         # native when possible

OUT=$WORK/results
: >"$OUT"
FAILED=""
try() {         # COMMAND LABEL ...: a failed row is reported, the rest run
    case $2 in ${BENCH_ONLY:-*}) ;; *) return 0 ;; esac
    "$@" || FAILED="$FAILED $2"
}
SEQUENTIAL=$((REQUESTS / 10 > 1000 ? REQUESTS / 10 : 1000))
START=$(date +%s)
echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) cores; $REQUESTS requests, $INFLIGHT in flight per client, 64-byte echo"

# Throughput: relay, then the broker per framing and security
try row relay-curve relay curve "$F46"
try row relay-plain relay plain "$F46"
for f in $FRAMINGS; do
    try row "broker-plain-$f" broker plain "$f"
    try row "broker-curve-$f" broker curve "$f"
    try row "broker-acl-$f" broker acl1k "$f"
    try row "broker-curve2-$f" broker curve "$f"
done
# The transport floor: the native batch's bytes around the same ring, no
# logic (libzmq and CURVE alone)
if [ -x "$BUILD/pigato-floor" ]; then
    try run_floor floor-curve curve
    try run_floor floor-plain plain
fi
# Several clients: 4 clients x INFLIGHT in flight each
try row relay-curve-4c relay curve "$F46" --clients 4
for f in $FRAMINGS; do
    try row "broker-acl-4c-$f" broker acl1k "$f" --clients 4
done
# Sequential latency (1 in flight)
for f in $FRAMINGS; do
    try row "broker-curve-seq-$f" broker curve "$f" --sequential --requests "$SEQUENTIAL"
done
# The same with --busy-poll 200 (the broker polls without sleeping for
# 200 us after work), and its throughput at 100 in flight
BROKER_ARGS="--busy-poll 200"
try row broker-curve-seq-native-busypoll broker curve native --sequential --requests "$SEQUENTIAL"
try row broker-acl-native-busypoll broker acl1k native
# The same broker with Prometheus metrics served (issue 16: within 2% of
# broker-acl-native) and with a durable store open (issue 17: non-durable
# traffic does not slow down)
BROKER_ARGS="--metrics-listen 127.0.0.1:0"
try row broker-acl-native-metrics broker acl1k native
BROKER_ARGS="--store $WORK/store"
try row broker-acl-native-store broker acl1k native
BROKER_ARGS=""
# Requests that each carry opts (an explicit timeout) instead of none:
# parsed by client, broker and worker
[ "$FN" = native ] && try row broker-acl-native-opts broker acl1k native --opts '{"timeout":30000}'
if [ -n "$NATS" ]; then
    try run_nats nats-plain plain
    if [ -n "$NATS_TLS" ]; then
        try run_nats nats-tls tls
        try run_nats nats-tls-seq tls --sequential --requests "$SEQUENTIAL"
    else
        echo "skipped: nats-tls (could not make a test certificate with the openssl CLI)"
    fi
else
    echo "skipped: nats-server (BENCH_NATS=0 or not installable)"
fi
# The NATS comparisons again, interleaved: BENCH_ROUNDS rounds of the
# native CURVE+ACL broker, NATS over TLS, the CURVE floor, the plaintext
# broker and plaintext NATS in turn, so that a slow minute on a shared
# machine hits them alike; summary.py reports medians
if [ -n "$NATS_TLS" ] && [ "${BENCH_ROUNDS:-15}" -gt 0 ] && [ "$FN" = native ]; then
    r=1
    while [ $r -le "${BENCH_ROUNDS:-15}" ]; do
        try row "ab$r-broker" broker acl1k native
        try run_nats "ab$r-nats-tls" tls
        [ -x "$BUILD/pigato-floor" ] && try run_floor "ab$r-floor" curve
        try row "ab$r-broker-plain" broker plain native
        try run_nats "ab$r-nats-plain" plain
        r=$((r + 1))
    done
fi
if [ -n "$NODE_MODULES" ]; then
    try row node-plain node plain "$F46"
    try row node-curve node curve "$F46"
else
    echo "skipped: node broker (BENCH_NODE=0, or: $(tail -1 "$WORK/node-setup.log" 2>/dev/null))"
fi

if [ "${BENCH_SCALE:-1}" != 0 ]; then
    # Flatness, in BENCH_SCALE_ROUNDS interleaved rounds whose order
    # alternates (small first, then large first), because one pair of rows
    # run back to back differs by more than the +-10% being measured here;
    # summary.py reports medians:
    #  * ACL identities: 10 vs 10,000, both with 1,000 rules;
    #  * 2,000 workers either way: one service, or 1,000 services x 2
    #    workers with the requests spread over all of them (same ACL)
    ids10() { try row "sc$r-ids10" broker acl10 "$FN"; }
    ids10k() { try row "sc$r-ids10k" broker acl10k "$FN"; }
    svc1() {
        WORKER_ARGS="--service echo --workers 2000"
        try row "sc$r-svc1" broker acl1k "$FN"
        WORKER_ARGS=""
    }
    svc1000() {
        WORKER_ARGS="--service echo --services 1000 --workers 2"
        try row "sc$r-svc1000" broker acl1k "$FN" --service echo --services 1000
        WORKER_ARGS=""
    }
    r=1
    while [ $r -le "${BENCH_SCALE_ROUNDS:-5}" ]; do
        if [ $((r % 2)) = 1 ]; then ids10; ids10k; svc1; svc1000
        else ids10k; ids10; svc1000; svc1; fi
        r=$((r + 1))
    done
    # The broker's I/O threads, when it has the option
    if "$BUILD/pigato-broker" --help 2>&1 | grep -q -- --io-threads; then
        BROKER_ARGS="--io-threads 1"; try row broker-io1 broker curve "$FN" --clients 4
        BROKER_ARGS="--io-threads 2"; try row broker-io2 broker curve "$FN" --clients 4
        BROKER_ARGS=""
    else
        echo "skipped: io-threads rows (pigato-broker has no --io-threads yet)"
    fi
    # Connections: idle clients (memory; 100 at a time, within libzmq's
    # default listen backlog of 100), a storm all at once (handshakes/s)
    try conns idle-relay relay "$IDLE" 100
    try conns idle-zaprelay zaprelay "$IDLE" 100
    try conns idle-broker broker "$IDLE" 100
    try conns storm-relay relay "$STORM"
    try conns storm-broker broker "$STORM"
fi

echo "# $(($(date +%s) - START)) s"
/usr/bin/python3 "$HERE/summary.py" "$OUT"
[ -z "$FAILED" ] || { echo "bench: failed:$FAILED" >&2; exit 1; }
