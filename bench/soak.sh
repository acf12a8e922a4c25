#!/bin/sh
# make soak: pigato-broker (CURVE + an ACL of 1,000 identities and 100
# rules) under steady load and connection churn for DURATION seconds, its
# RSS sampled every 10 s. Load: rounds of pigato-bench (2 clients x 100 in
# flight, new connections every round, framing alternating 0.0.46 and
# native) against 4 echo workers in auto framing; churn: 200 CURVE clients
# that connect, heartbeat and leave, every round. Reports the samples and
# the growth after warm-up (no growth expected).
#   bench/soak.sh BUILD [DURATION]
set -eu
BUILD=${1:-build}
DURATION=${2:-${DURATION:-600}}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

/usr/bin/python3 "$HERE/make_acl.py" "$WORK" soak 1000 100
p=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
EP=tcp://127.0.0.1:$p
"$BUILD/pigato-broker" --bind "$EP" --key "$WORK/broker.key_secret" --acl "$WORK/soak.acl" \
    --log-level warning >/dev/null 2>"$WORK/broker.log" &
BPID=$!; PIDS="$PIDS $BPID"
i=0
while ! grep -q "event=ready" "$WORK/broker.log"; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "soak: broker did not start" >&2; cat "$WORK/broker.log" >&2; exit 1; }
    sleep 0.1
done
"$BUILD/pigato-bench" --worker --broker "$EP" --server-key "$WORK/broker.key" \
    --key "$WORK/bench-worker.key_secret" --workers 4 2>"$WORK/worker.log" &
PIDS="$PIDS $!"

# The load, in rounds until the deadline
: >"$WORK/load.out"; : >"$WORK/churn.out"
START=$(date +%s)
DEADLINE=$((START + DURATION))
(
    round=0
    while [ "$(date +%s)" -lt "$DEADLINE" ]; do
        [ $((round % 2)) = 0 ] && framing=0.0.46 || framing=native
        "$BUILD/pigato-bench" --broker "$EP" --server-key "$WORK/broker.key" \
            --key "$WORK/bench-client.key_secret" --framing "$framing" --clients 2 \
            --requests 20000 --label "round$round-$framing" >>"$WORK/load.out" 2>>"$WORK/load.log" \
            || echo "label=round$round-$framing failed=1" >>"$WORK/load.out"
        "$BUILD/pigato-conns" --broker "$EP" --server-key "$WORK/broker.key" --connections 200 \
            --key "$WORK/bench-client.key_secret" --batch 100 --timeout 30 --label "churn$round" >>"$WORK/churn.out" 2>>"$WORK/load.log" \
            || echo "label=churn$round failed=1" >>"$WORK/churn.out"
        round=$((round + 1))
    done
) &
LOAD=$!; PIDS="$PIDS $LOAD"

echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) cores; soak ${DURATION} s, broker RSS every 10 s"
: >"$WORK/rss"
while :; do
    now=$(date +%s)
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$BPID/status" 2>/dev/null) \
        || { echo "soak: the broker died" >&2; tail -20 "$WORK/broker.log" >&2; exit 1; }
    echo "t=$((now - START)) rss_kb=$rss" | tee -a "$WORK/rss"
    [ "$now" -ge "$DEADLINE" ] && break
    sleep 10
done
wait "$LOAD" || true
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$BPID/status")
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$BPID/status")
echo "t=$(($(date +%s) - START)) rss_kb=$rss (after the last round)" | tee -a "$WORK/rss"

awk -v hwm="$hwm" '
FILENAME ~ /rss$/ { split($1, t, "="); split($2, r, "="); n++; time[n] = t[2]; rss[n] = r[2]; next }
/failed=1/ { failed++; next }
FILENAME ~ /load.out$/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                         requests += v["requests"]; errors += v["errors"]; rounds++ }
FILENAME ~ /churn.out$/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                          connections += v["answered"] }
END {
    # Warm-up: the first sample at or after 10% of the run (at least 10 s)
    warm = 1
    for (i = 1; i <= n; i++) if (time[i] >= (time[n] / 10 > 10 ? time[n] / 10 : 10)) { warm = i; break }
    mid = warm; for (i = warm; i <= n; i++) if (time[i] <= (time[warm] + time[n]) / 2) mid = i
    printf "soak: %d load rounds, %d requests, %d errors, %d churn connections, %d failed rounds\n", rounds, requests, errors, connections, failed
    printf "soak: broker RSS %d kB at t=%d s (after warm-up), %d kB at t=%d s, %d kB at the end; peak %d kB\n", rss[warm], time[warm], rss[mid], time[mid], rss[n], hwm
    printf "soak: growth after warm-up %+d kB (%+.1f%%), over the second half %+d kB\n", rss[n] - rss[warm], (rss[n] - rss[warm]) * 100 / rss[warm], rss[n] - rss[mid]
    if (failed || errors) exit 1
}' "$WORK/rss" "$WORK/load.out" "$WORK/churn.out"
