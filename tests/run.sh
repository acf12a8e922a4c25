#!/bin/sh
# Runs every test program and reports: the unit tests (BUILD/tests/test_*,
# cmocka), the integration tests (tests/integration/test_*.py, among them
# test_matrix.py: every client kind with every worker kind, its matrix
# printed in its log) and the Node interop test
# (tests/integration/test_node_interop.py, last).
#   tests/run.sh BUILD_DIR
#   VALGRIND=1 tests/run.sh BUILD_DIR     unit tests under valgrind
#   PIGATO_TEST_SLOW=3 ...                stretch every test timeout 3x
#   PIGATO_REQUIRE_NODE=1 ...             a skipped Node interop test fails
# Ends with "tests: N passed, M failed"; exits 1 if anything failed.
set -u
build=${1:?usage: tests/run.sh BUILD_DIR}
cd "$(dirname "$0")/.." || exit 2
build=$(cd "$build" && pwd) || exit 2
export PIGATO_BUILD="$build"
PY=/usr/bin/python3               # a pyenv python3 may be first on PATH, without zmq
limit=${PIGATO_TEST_TIMEOUT:-600} # seconds per test program
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT INT TERM

passed=0
failed=0
failures=""
notes=""

run () {
    name=$1; shift
    log="$logs/$(echo "$name" | tr '/ ' '__').log"
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    t=$(( $(date +%s) - t0 ))
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "PASS  $name (${t}s)"
    else
        failed=$((failed + 1))
        failures="$failures $log"
        [ $rc -eq 124 ] && echo "timed out after ${limit}s" >>"$log"
        echo "FAIL  $name (${t}s, exit $rc)"
    fi
    # unittest -v prints "... skipped 'reason'": never let a skip pass silently.
    skips=$(grep -c " \.\.\. skipped " "$log")
    if [ "$skips" -gt 0 ]; then
        reason=$(grep " \.\.\. skipped " "$log" | sed -e "s/.* skipped //" | sort -u | head -3 | tr '\n' ' ')
        echo "      SKIPPED $skips test(s) in $name: $reason"
        notes="$notes
SKIPPED $skips test(s) in $name: $reason"
    fi
}

if ! [ -x "$build/pigato-broker" ] || ! [ -x "$build/pigato" ]; then
    echo "run.sh: $build has no pigato-broker/pigato; run make all" >&2
    exit 2
fi

for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    if [ "${VALGRIND:-0}" = 1 ]; then
        run "unit/$(basename "$t") (valgrind)" \
            valgrind -q --leak-check=full --error-exitcode=9 "$t"
    else
        run "unit/$(basename "$t")" "$t"
    fi
done

for t in tests/integration/test_*.py; do
    [ -f "$t" ] || continue
    [ "$(basename "$t")" = test_node_interop.py ] && continue
    run "${t#tests/}" "$PY" "$t"
done

if [ -f tests/integration/test_node_interop.py ]; then
    run "integration/test_node_interop.py" "$PY" tests/integration/test_node_interop.py
fi

for log in $failures; do
    echo
    echo "==== $(basename "$log" .log): last 60 lines ===="
    tail -n 60 "$log"
done
[ -n "$notes" ] && printf '%s\n' "$notes"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
