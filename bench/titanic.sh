#!/bin/sh
# make bench-titanic: durable requests (pigato-broker --store) side by side
# with NATS JetStream, in one run on one machine, in interleaved rounds
# (a slow minute on a shared machine hits both):
#   bench/titanic.sh BUILD [ROUNDS]            (default 3 rounds)
# Each round, on a fresh store each:
#   * acks: durable submissions acknowledged per second, 100 unacknowledged
#     at a time, nobody consuming them (titanic-bench --mode acks against
#     pigato-broker --insecure --store; jetstream-bench --mode acks: file
#     storage, work-queue retention, publish with ack);
#   * acks-interval, roundtrip-interval: the same with pigato-broker
#     --store-sync 1000 (acknowledged once the COMMIT is written, fsync'd
#     every second at most: JetStream's own bargain), to show what the
#     per-commit fsync costs; the goal is the acks row;
#   * round trip: one at a time, submit -> worker -> reply stored and in the
#     client's hands (pigato: submit, then titanic.reply until 200, the
#     worker `pigato serve --echo`; JetStream: publish with ack, a worker
#     pulls it (explicit ack), publishes the reply with ack to a second
#     stream, acks the job, the client pulls the reply).
# Plaintext both (no CURVE, no TLS): the store is what is compared.
# The durability is not the same: pigato acknowledges once the request is
# committed and fsync'd (SQLite WAL, an fdatasync after the COMMIT, group commit);
# nats-server 2.9 acknowledges what is written to its file store and
# fsyncs it every 2 minutes (sync_interval appeared in 2.10).
# ACKS (default 20000) and TRIPS (default 1000) set the sizes. Not a
# pass/fail test: figures go to stdout; the last lines are the ratios.
set -eu
BUILD=${1:-build}
ROUNDS=${2:-3}
ACKS=${ACKS:-20000}
TRIPS=${TRIPS:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
for program in pigato-broker pigato titanic-bench jetstream-bench; do
    [ -x "$BUILD/$program" ] || { echo "titanic.sh: build $BUILD/$program first (make bench-titanic)" >&2; exit 1; }
done
NATS=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || true)
[ -n "$NATS" ] || { echo "titanic.sh: needs nats-server (apt-get install nats-server)" >&2; exit 1; }
. "$HERE/common.sh"
OUT=$WORK/results.txt
: >"$OUT"

stop() {
    kill "$@" 2>/dev/null || true
    wait "$@" 2>/dev/null || true
}

# run_pigato MODE ROUND: a broker on a fresh store, a worker for round trips
run_pigato() {
    mode=$1; round=$2; sync=""
    p=$(port); store=$WORK/store-$mode-$round
    case $mode in *-interval) mode=${mode%-interval}; sync="--store-sync 1000" ;; esac
    # shellcheck disable=SC2086
    "$BUILD/pigato-broker" --insecure --bind "tcp://127.0.0.1:$p" --store "$store" \
        $sync >/dev/null 2>"$WORK/broker.log" &
    bpid=$!; PIDS="$PIDS $bpid"
    wait_log "$WORK/broker.log" "event=ready"
    wpid=""
    if [ "$mode" = roundtrip ]; then
        "$BUILD/pigato" serve bench --echo --insecure --broker "tcp://127.0.0.1:$p" \
            >/dev/null 2>&1 &
        wpid=$!; PIDS="$PIDS $wpid"
        wait_log "$WORK/broker.log" "event=worker_ready service=bench"
    fi
    n=$ACKS; [ "$mode" = roundtrip ] && n=$TRIPS
    "$BUILD/titanic-bench" --broker "tcp://127.0.0.1:$p" --insecure --mode "$mode" \
        --requests "$n" --broker-pid "$bpid" --label "pigato-$1" >>"$OUT" \
        2>>"$WORK/bench.log"
    stop $wpid "$bpid"
    tail -1 "$OUT"
}

# run_jetstream MODE ROUND: nats-server -js on a fresh store, the worker
run_jetstream() {
    mode=$1; round=$2
    p=$(port); store=$WORK/js-$mode-$round
    "$NATS" -js -sd "$store" -a 127.0.0.1 -p "$p" >"$WORK/nats.log" 2>&1 &
    spid=$!; PIDS="$PIDS $spid"
    wait_log "$WORK/nats.log" "Server is ready"
    wpid=""
    if [ "$mode" = roundtrip ]; then
        "$BUILD/jetstream-bench" --server "127.0.0.1:$p" --worker >/dev/null \
            2>"$WORK/js-worker.log" &
        wpid=$!; PIDS="$PIDS $wpid"
        wait_log "$WORK/js-worker.log" "event=ready"
    fi
    n=$ACKS; [ "$mode" = roundtrip ] && n=$TRIPS
    "$BUILD/jetstream-bench" --server "127.0.0.1:$p" --mode "$mode" --requests "$n" \
        --server-pid "$spid" --label "jetstream-$mode" >>"$OUT" 2>>"$WORK/bench.log"
    stop $wpid "$spid"
    tail -1 "$OUT"
}

echo "durable requests vs NATS JetStream $("$NATS" --version | sed 's/.* //'), $ROUNDS rounds, $(nproc) cores"
# What one flush of this disk costs: a floor under every acknowledgement
# with an fsync per commit (the store is on the same file system as WORK)
/usr/bin/python3 - "$WORK/flush-probe" <<'EOF'
import os, statistics, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
os.write(fd, b"\0" * (4 << 20)); os.fsync(fd)
block, took = b"x" * 16384, []
for i in range(400):
    start = time.perf_counter()
    os.pwrite(fd, block, (i % 256) * 16384)
    os.fdatasync(fd)
    took.append((time.perf_counter() - start) * 1e6)
os.close(fd); os.unlink(sys.argv[1])
took.sort()
print("this disk: a 16 KiB write + fdatasync takes p50 %.0f us, p90 %.0f us"
      % (statistics.median(took), took[len(took) * 9 // 10]))
EOF
echo "JetStream: file storage, work-queue retention, publish with ack, pull consumers with"
echo "explicit ack; no fsync per message (2.9 syncs its files every 2 minutes). pigato: an"
echo "acknowledgement means committed and fsync'd (SQLite WAL, fdatasync after COMMIT, group commit)."
round=1
while [ "$round" -le "$ROUNDS" ]; do
    run_pigato acks "$round"
    run_jetstream acks "$round"
    run_pigato acks-interval "$round"
    run_pigato roundtrip "$round"
    run_jetstream roundtrip "$round"
    run_pigato roundtrip-interval "$round"
    round=$((round + 1))
done
/usr/bin/python3 - "$OUT" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    rows.setdefault(fields["label"], []).append(fields)
def median(label, key):
    return statistics.median(float(r[key]) for r in rows[label])
pa, ja = median("pigato-acks", "rps"), median("jetstream-acks", "rps")
pr, jr = median("pigato-roundtrip", "p50_us"), median("jetstream-roundtrip", "p50_us")
pr99, jr99 = median("pigato-roundtrip", "p99_us"), median("jetstream-roundtrip", "p99_us")
print("acknowledged durable submissions/s, 100 in flight (medians): pigato %.0f, "
      "JetStream %.0f: ratio %.2f" % (pa, ja, pa / ja))
pi = median("pigato-acks-interval", "rps")
print("the same with --store-sync 1000 (no fsync per commit, as JetStream): pigato "
      "%.0f: ratio %.2f" % (pi, pi / ja))
print("durable round trip p50 / p99 us (medians): pigato %.0f / %.0f, JetStream "
      "%.0f / %.0f: ratio (p50) %.2f" % (pr, pr99, jr, jr99, pr / jr))
pir = median("pigato-roundtrip-interval", "p50_us")
print("the same with --store-sync 1000: pigato p50 %.0f us: ratio %.2f" % (pir, pir / jr))
EOF
