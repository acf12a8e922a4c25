#!/bin/sh
# make bench-instructions: what one request costs in instructions, counted
# by callgrind, in the broker, the echo worker and the client. Unlike
# req/s these counts barely move between runs on a shared machine, so two
# builds can be compared on them directly:
#   bench/instructions.sh BUILD [REQUESTS]      (default 50,000)
# With KEEP=DIR the callgrind files are copied there (callgrind_annotate
# DIR/broker.out shows where a change went). BROKER_EXTRA adds options to
# the broker (e.g. BROKER_EXTRA="--metrics-listen 127.0.0.1:9464").
# Native framing, CURVE, the 1,000-identity ACL of make bench, 100 in
# flight, 64-byte bodies. For each process it prints all instructions per
# request (the libzmq I/O thread's CURVE work included) and those of the
# application thread alone: the broker's loop (pigato_broker_run) or the
# bench's zloop (zloop_start: libpigato, the bench code it calls and the
# polling).
set -eu
BUILD=${1:-build}
REQUESTS=${2:-50000}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v valgrind >/dev/null || { echo "instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
command -v callgrind_annotate >/dev/null || { echo "instructions.sh: needs callgrind_annotate (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BUILD/pigato-bench" ] || { echo "instructions.sh: build $BUILD/pigato-bench first (make bench)" >&2; exit 1; }
. "$HERE/common.sh"
/usr/bin/python3 "$HERE/make_acl.py" "$WORK" acl1k 1000 100
EP=tcp://127.0.0.1:$(port)
CG="valgrind --tool=callgrind --dump-instr=no"
$CG --callgrind-out-file="$WORK/broker.out" "$BUILD/pigato-broker" --bind "$EP" \
    --key "$WORK/broker.key_secret" --acl "$WORK/acl1k.acl" --log-level info ${BROKER_EXTRA:-} \
    >/dev/null 2>"$WORK/broker.log" &
BPID=$!; PIDS="$BPID"
wait_log "$WORK/broker.log" event=ready 600  # callgrind starts slowly
$CG --callgrind-out-file="$WORK/worker.out" "$BUILD/pigato-bench" --worker \
    --broker "$EP" --server-key "$WORK/broker.key" \
    --key "$WORK/bench-worker.key_secret" --framing native \
    >/dev/null 2>"$WORK/worker.log" &
WPID=$!; PIDS="$PIDS $WPID"
wait_log "$WORK/worker.log" event=ready 600
$CG --callgrind-out-file="$WORK/client.out" "$BUILD/pigato-bench" \
    --broker "$EP" --server-key "$WORK/broker.key" \
    --key "$WORK/bench-client.key_secret" --framing native \
    --requests "$REQUESTS" --inflight 100 >"$WORK/client.txt" 2>"$WORK/client.log"
grep -q "errors=0" "$WORK/client.txt" || { echo "instructions.sh: the client failed" >&2; cat "$WORK/client.txt" "$WORK/client.log" >&2; exit 1; }
# SIGTERM: the broker and the worker end their loops and exit, and
# callgrind writes its file
kill "$WPID" "$BPID"
wait "$WPID" "$BPID" 2>/dev/null || true
PIDS=""
per_request() {     # FILE FUNCTION: total and FUNCTION's inclusive count / request
    total=$(callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    app=$(callgrind_annotate --inclusive=yes "$1" 2>/dev/null \
          | awk -v f=":$2 " 'index($0, f) { gsub(",", "", $1); print $1; exit }')
    echo "total=$((total / REQUESTS)) app=$((${app:-0} / REQUESTS))"
}
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp "$WORK/broker.out" "$WORK/worker.out" "$WORK/client.out" "$KEEP/"
fi
echo "instructions per request ($REQUESTS native CURVE+ACL requests, 100 in flight):"
echo "  broker  $(per_request "$WORK/broker.out" pigato_broker_run)"
echo "  worker  $(per_request "$WORK/worker.out" zloop_start)"
echo "  client  $(per_request "$WORK/client.out" zloop_start)"
