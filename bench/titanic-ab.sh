#!/bin/sh
# Durable acknowledgements of two (or more) builds against JetStream, in
# interleaved rounds: every round runs JetStream, then each build, so a
# slow minute on a shared machine hits all of them (the figures of a
# single build move by +-25% over an hour here; ratios from one round's
# neighbours do not).
#   bench/titanic-ab.sh ROUNDS BUILD [BUILD...]
# A BUILD may carry one more broker option after an @, e.g.
# build@--store-sync=1000 (acknowledged at the write, fsync'd every second).
# Each run: a fresh store (or JetStream folder), N (default 50000)
# submissions acknowledged at 100 in flight, nobody consuming them, as in
# bench/titanic.sh's acks rows. Prints each row, then per build the
# median rate, its ratio to JetStream's median, the median p50 latency
# and server CPU. Not a pass/fail test.
set -eu
ROUNDS=${1:?usage: titanic-ab.sh ROUNDS BUILD [BUILD...]}
shift
[ $# -ge 1 ] || { echo "titanic-ab.sh: name at least one build folder" >&2; exit 1; }
N=${N:-50000}
HERE=$(cd "$(dirname "$0")" && pwd)
NATS=$(PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v nats-server || true)
[ -n "$NATS" ] || { echo "titanic-ab.sh: needs nats-server (apt-get install nats-server)" >&2; exit 1; }
for build in "$@"; do
    for program in pigato-broker titanic-bench jetstream-bench; do
        [ -x "${build%%@*}/$program" ] || { echo "titanic-ab.sh: build ${build%%@*}/$program first (make bench-titanic)" >&2; exit 1; }
    done
done
BUILD=${1%%@*}    # common.sh makes the bench identities with its pigato-keygen
. "$HERE/common.sh"
OUT=$WORK/rows.txt
: >"$OUT"

round=1
while [ "$round" -le "$ROUNDS" ]; do
    p=$(port); store=$WORK/js-$round
    "$NATS" -js -sd "$store" -a 127.0.0.1 -p "$p" >"$WORK/nats.log" 2>&1 &
    spid=$!; PIDS="$PIDS $spid"
    wait_log "$WORK/nats.log" "Server is ready"
    "$BUILD/jetstream-bench" --server "127.0.0.1:$p" --mode acks --requests "$N" \
        --server-pid "$spid" --label jetstream >>"$OUT" 2>>"$WORK/bench.log"
    kill "$spid"; wait "$spid" 2>/dev/null || true
    tail -1 "$OUT"
    for build in "$@"; do
        dir=${build%%@*}; extra=""
        case $build in *@*) extra=${build#*@} ;; esac
        p=$(port); store=$WORK/store-$round
        rm -rf "$store"
        # shellcheck disable=SC2086
        "$dir/pigato-broker" --insecure --bind "tcp://127.0.0.1:$p" --store "$store" \
            $extra >/dev/null 2>"$WORK/broker.log" &
        bpid=$!; PIDS="$PIDS $bpid"
        wait_log "$WORK/broker.log" "event=ready"
        "$dir/titanic-bench" --broker "tcp://127.0.0.1:$p" --insecure --mode acks \
            --requests "$N" --broker-pid "$bpid" --label "$build" >>"$OUT" \
            2>>"$WORK/bench.log"
        kill "$bpid"; wait "$bpid" 2>/dev/null || true
        rm -rf "$store"
        tail -1 "$OUT"
    done
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
js = median("jetstream", "rps")
for label in rows:
    rate = median(label, "rps")
    print("%-24s acks/s %8.0f  ratio to JetStream %.2f  p50 us %5.0f  "
          "server cpu s/100k %.2f" % (label, rate, rate / js,
                                      median(label, "p50_us"),
                                      median(label, "server_cpu_s_per_100k")))
EOF
